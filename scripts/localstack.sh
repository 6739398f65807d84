#!/usr/bin/env bash
# LocalStack (S3, SQS, EventBridge) for the integration tests, run from a Python venv on the
# host: no Docker needed.
#
#   scripts/localstack.sh install   create/refresh the venv (cached, keyed by the constraints)
#   scripts/localstack.sh start     start in the background and wait until healthy
#                                   (no-op if a healthy LocalStack already answers)
#   scripts/localstack.sh stop      stop the LocalStack this script started (pid file)
#   scripts/localstack.sh status    print its health; exit 0 only if s3, sqs, events are up
#   scripts/localstack.sh selftest  S3 put/get, SQS send/receive, EventBridge rule via awscli
#   scripts/localstack.sh env       print the venv's bin dir (for PATH) and exit
#
# Knobs: GHEVENTS_CACHE_DIR (venvs and state), LOCALSTACK_START_TIMEOUT (seconds, default 120).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOCALSTACK_VERSION=4.13.1
CONSTRAINTS=$GHEVENTS_ROOT/.ci/localstack-constraints.txt
# The [runtime] extra brings moto (EventBridge needs it) and awscli, both pinned by the constraints.
REQUIREMENTS=("localstack-core[runtime]==$LOCALSTACK_VERSION")

HOST=127.0.0.1
PORT=4566
ENDPOINT=http://$HOST:$PORT
HEALTH_URL=$ENDPOINT/_localstack/health
NEEDED_SERVICES="s3 sqs events"
START_TIMEOUT=${LOCALSTACK_START_TIMEOUT:-120}

RUN_DIR=$GHEVENTS_CACHE/run
PID_FILE=$RUN_DIR/localstack.pid
LOG_FILE=$RUN_DIR/localstack.log

venv_dir() { ensure_venv localstack "$CONSTRAINTS" "${REQUIREMENTS[@]}"; }

# Any Python 3 will do for the stdlib-only probes below.
probe_python() {
  if command -v python3 >/dev/null 2>&1; then echo python3; else find_python311; fi
}

# health [verbose]: exit 0 if every needed service is "available" or "running",
# 1 if LocalStack answers but some are not, 2 if nothing answers.
health() {
  "$(probe_python)" - "$HEALTH_URL" "$NEEDED_SERVICES" "${1:-}" <<'PY'
import json, sys, urllib.request
url, needed, verbose = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "verbose"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
try:
    with opener.open(url, timeout=3) as resp:
        data = json.load(resp)
except Exception as exc:  # connection refused, timeout, bad JSON...
    if verbose:
        print(f"LocalStack not answering on {url}: {exc}")
    sys.exit(2)
services = data.get("services", {})
state = {name: services.get(name, "missing") for name in needed}
if verbose:
    print(f"LocalStack {data.get('version', '?')}: " + ", ".join(f"{k}={v}" for k, v in state.items()))
sys.exit(0 if all(v in ("available", "running") for v in state.values()) else 1)
PY
}

port_in_use() {
  "$(probe_python)" - "$HOST" "$PORT" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
}

# Prints the pid from the pid file if that process is still our LocalStack.
our_pid() {
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid=$(cat "$PID_FILE")
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'localstack.runtime.main' || return 1
  echo "$pid"
}

show_log_tail() {
  [ -f "$LOG_FILE" ] || return 0
  log "last lines of $LOG_FILE:"
  tail -n 40 "$LOG_FILE" >&2 || true
}

cmd_install() {
  local venv
  venv=$(venv_dir)
  log "LocalStack $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))') in $venv"
}

wait_healthy() {
  local pid=$1 started=$2 rc=0
  while :; do
    rc=0
    health || rc=$?
    if [ "$rc" = 0 ]; then
      log "healthy after $(($(date +%s) - started)) s: $(health verbose)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      die "LocalStack (pid $pid) exited before becoming healthy"
    fi
    if [ $(($(date +%s) - started)) -ge "$START_TIMEOUT" ]; then
      health verbose >&2 || true
      show_log_tail
      die "LocalStack not healthy after $START_TIMEOUT s (still running as pid $pid; 'scripts/localstack.sh stop' ends it)"
    fi
    sleep 1
  done
}

cmd_start() {
  local venv pid started
  if health; then
    log "already running and healthy, nothing to do: $(health verbose)"
    return 0
  fi
  if pid=$(our_pid); then
    log "LocalStack started earlier (pid $pid) is not healthy yet; waiting"
    wait_healthy "$pid" "$(date +%s)"
    return
  fi
  if port_in_use; then
    health verbose >&2 || true
    die "port $PORT is taken by something that is not a healthy LocalStack with $NEEDED_SERVICES; free it first"
  fi
  venv=$(venv_dir)
  mkdir -p "$RUN_DIR"
  printf '=== %s: starting LocalStack %s from %s\n' "$(date -u +%FT%TZ)" "$LOCALSTACK_VERSION" "$venv" >"$LOG_FILE"
  started=$(date +%s)
  # setsid: own session and process group, so that stop can end all of it and a Ctrl-C
  # in the caller's terminal does not reach it. Without job control (set +m) the background
  # child is not a group leader, so setsid execs in place and $! is LocalStack's pid.
  # LOCALSTACK_HOST makes returned URLs (SQS queue URLs) point at 127.0.0.1, not at
  # localhost.localstack.cloud, which needs public DNS.
  set +m
  env OVERRIDE_IN_DOCKER=0 \
    GATEWAY_LISTEN=$HOST:$PORT \
    GATEWAY_SERVER=hypercorn \
    SQS_ENDPOINT_STRATEGY=path \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    SERVICES=s3,sqs,events \
    LOCALSTACK_HOST=$HOST:$PORT \
    setsid "$venv/bin/python" -m localstack.runtime.main >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  log "started pid $pid, log $LOG_FILE; waiting up to $START_TIMEOUT s for $NEEDED_SERVICES"
  wait_healthy "$pid" "$started"
}

cmd_stop() {
  local pid i
  if ! pid=$(our_pid); then
    if [ -f "$PID_FILE" ]; then
      log "pid $(cat "$PID_FILE") from $PID_FILE is no longer LocalStack; removing the stale pid file"
      rm -f "$PID_FILE"
    else
      log "no LocalStack started by this script (no $PID_FILE); leaving anything else alone"
    fi
    return 0
  fi
  log "stopping LocalStack (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$i" = 30 ] || sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after 30 s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  local pid
  if pid=$(our_pid); then
    log "started by this script: pid $pid, log $LOG_FILE"
  fi
  health verbose
}

cmd_selftest() {
  local venv tmp bucket queue queue_url rule body got
  health || die "LocalStack is not healthy on $ENDPOINT; run 'scripts/localstack.sh start' first"
  venv=$(venv_dir)
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  printf '[default]\ns3 =\n    addressing_style = path\n' >"$tmp/config"
  export AWS_CONFIG_FILE=$tmp/config AWS_SHARED_CREDENTIALS_FILE=$tmp/credentials
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true NO_PROXY="$HOST,localhost${NO_PROXY:+,$NO_PROXY}"
  aws() { "$venv/bin/aws" --endpoint-url "$ENDPOINT" "$@"; }

  bucket=ghevents-selftest-$$-$RANDOM
  queue=ghevents-selftest-$$-$RANDOM
  rule=ghevents-selftest-$$-$RANDOM
  body="selftest $(date -u +%FT%TZ) $RANDOM"

  log "S3: create bucket $bucket, put and get an object"
  aws s3api create-bucket --bucket "$bucket" >/dev/null
  printf '%s' "$body" >"$tmp/object"
  aws s3api put-object --bucket "$bucket" --key dir/object.txt --body "$tmp/object" >/dev/null
  aws s3api get-object --bucket "$bucket" --key dir/object.txt "$tmp/object.back" >/dev/null
  cmp -s "$tmp/object" "$tmp/object.back" || die "S3 object read back differs"
  aws s3api delete-object --bucket "$bucket" --key dir/object.txt >/dev/null
  aws s3api delete-bucket --bucket "$bucket" >/dev/null

  log "SQS: create queue $queue, send and receive a message"
  queue_url=$(aws sqs create-queue --queue-name "$queue" --query QueueUrl --output text)
  log "  queue URL: $queue_url"
  aws sqs send-message --queue-url "$queue_url" --message-body "$body" >/dev/null
  got=$(aws sqs receive-message --queue-url "$queue_url" --wait-time-seconds 2 \
    --query 'Messages[0].Body' --output text)
  [ "$got" = "$body" ] || die "SQS message received ('$got') differs from the one sent ('$body')"
  aws sqs delete-queue --queue-url "$queue_url" >/dev/null

  log "EventBridge: put rule $rule"
  aws events put-rule --name "$rule" --event-pattern '{"source":["ghevents.selftest"]}' \
    --query RuleArn --output text >&2
  got=$(aws events describe-rule --name "$rule" --query State --output text)
  [ "$got" = ENABLED ] || die "EventBridge rule state is '$got', not ENABLED"
  aws events delete-rule --name "$rule" >/dev/null

  echo "LocalStack selftest ok: s3 put/get, sqs send/receive, events put-rule"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  selftest) cmd_selftest ;;
  env) echo "$(venv_dir)/bin" ;;
  *)
    echo "usage: $0 {install|start|stop|status|selftest|env}" >&2
    exit 2
    ;;
esac
