#!/usr/bin/env bash
# The crash campaign: kills ghevents (kill -9) at named failpoints and at seeded random moments,
# restarts PostgreSQL and LocalStack under it, has github-sim misbehave, then checks from the
# simulator's ground truth that nothing was lost, duplicated or forgotten. Prints a table and
# writes docs/reliability.md (generated; never edit it by hand).
#
#   scripts/campaign.sh [--seed N] [--short] [--no-lambda]
#
#   --seed N      seed of the random moments and shuffles (default 1)
#   --short       about a third of the kills (CI: a few minutes)
#   --no-lambda   skip the phase that needs LocalStack
#   --doc PATH    write the report there instead of docs/reliability.md
#
# It starts its own PostgreSQL cluster (initdb, a free port) and its own LocalStack (a free
# port, the venv of scripts/localstack.sh) and stops both on exit; the services on 5432 and
# 4566 are never touched. Builds the debug binaries with `--features failpoints`. Logs of every
# process: target/campaign/logs/. Knobs: GHEVENTS_DATA_DIR, CARGO_TARGET_DIR.
set -euo pipefail

GHEVENTS_LOG_TAG=campaign
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GHEVENTS_ROOT"

for a in "$@"; do
  case $a in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
done

command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)"
log "building ghevents, lambda-local (with failpoints) and github-sim (debug)"
cargo build -q -p ghevents-cli -p ghevents-lambda-local -p github-sim \
  --features ghevents-cli/failpoints,ghevents-lambda-local/failpoints
target=${CARGO_TARGET_DIR:-$GHEVENTS_ROOT/target}
bins=$target/campaign-bin
mkdir -p "$bins"
# Copies: a later build without the feature must not swap the binaries under a running campaign.
for b in ghevents lambda-local github-sim; do cp -f "$target/debug/$b" "$bins/$b"; done
export CAMPAIGN_BINS="{\"ghevents\": \"$bins/ghevents\", \"lambda-local\": \"$bins/lambda-local\", \"github-sim\": \"$bins/github-sim\"}"

no_lambda=
for a in "$@"; do [ "$a" = --no-lambda ] && no_lambda=1; done
if [ -z "$no_lambda" ]; then
  LOCALSTACK_VENV_BIN=$(scripts/localstack.sh env)
  export LOCALSTACK_VENV_BIN
fi
exec python3 scripts/campaign.py --work "$target/campaign" "$@"
