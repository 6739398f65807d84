#!/usr/bin/env bash
# The project's test command: brings up what the integration tests need, runs
# `cargo test --workspace --all-targets` with any extra arguments passed through, and stops
# again whatever it started. Exits with cargo's status.
#
#   scripts/test.sh                      # everything
#   scripts/test.sh -p ghevents-core   # extra args go to cargo test
#   scripts/test.sh -- --nocapture       # ...including the test binaries' own
#
# It provides: DATABASE_URL (a role that may CREATE DATABASE; see scripts/postgres.sh),
# LocalStack with S3/SQS/EventBridge on 127.0.0.1:4566 (scripts/localstack.sh) and
# AWS_ENDPOINT_URL/AWS_* pointing at it, LOCALSTACK=1, and cargo-lambda on PATH when
# scripts/cargo-lambda.sh has installed it.
set -euo pipefail

GHEVENTS_LOG_TAG=test.sh
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GHEVENTS_ROOT"

started_localstack=
started_postgres=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$started_localstack" ]; then scripts/localstack.sh stop || true; fi
  if [ -n "$started_postgres" ]; then scripts/postgres.sh stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PostgreSQL
postgres_before=
if scripts/postgres.sh status >/dev/null 2>&1; then postgres_before=1; fi
DATABASE_URL=$(scripts/postgres.sh ensure | tail -n 1)
export DATABASE_URL
if [ -z "$postgres_before" ] && scripts/postgres.sh status >/dev/null 2>&1; then
  started_postgres=1
fi

# LocalStack
if scripts/localstack.sh status >/dev/null 2>&1; then
  log "LocalStack already running on 127.0.0.1:4566; using it and leaving it running"
else
  started_localstack=1
  scripts/localstack.sh start
fi

export AWS_ENDPOINT_URL=http://127.0.0.1:4566
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export LOCALSTACK=1
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy=$NO_PROXY

if lambda_bin=$(scripts/cargo-lambda.sh bin-dir 2>/dev/null); then
  PATH=$lambda_bin:$PATH
  export PATH
fi

log "DATABASE_URL=$DATABASE_URL AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
log "cargo test --workspace --all-targets $*"
status=0
cargo test --workspace --all-targets "$@" || status=$?
exit "$status"
