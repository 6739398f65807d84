#!/usr/bin/env bash
# Runs the three Lambda binaries for real on this machine and checks what they did:
# `cargo lambda watch` serves them behind Lambda's runtime API emulator, `cargo lambda invoke`
# sends them a scheduled event (ingest) and an SQS event built from the messages ingest queued
# (enrich), against PostgreSQL, LocalStack (S3, SQS) and github-sim serving a GH Archive hour;
# then `ghevents backfill --queue` puts that hour on an hours queue, and the archive function
# imports it from a local HTTP server standing in for data.gharchive.org (an SQS event built
# from the message), and its scheduled event enqueues the last complete hour.
#
#   scripts/lambda-smoke.sh
#
# Asserts: 300 events stored with their raw bytes in 3 S3 objects (one per page), one SQS
# message per new push event and every row marked enqueued; the enrich invocation reports
# no failure and completes the push events of its batch; each invocation printed one valid
# CloudWatch Embedded Metric Format line (checked by emf_check below) with the figures of
# what it did; the archive hour is `done`, every event of the hour is stored once (the 300
# polled ones counted as already present), and its file is one S3 object. Stops and deletes
# everything it started or created (database, bucket, queues, github-sim, the HTTP server,
# watch, and LocalStack/PostgreSQL when it started them). Knobs: SMOKE_PORT (invoke port, default 9309),
# SMOKE_TIMEOUT (seconds per wait, default 300), GHEVENTS_DATA_DIR.
set -euo pipefail

GHEVENTS_LOG_TAG=lambda-smoke
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GHEVENTS_ROOT"

PORT=${SMOKE_PORT:-9309}
WAIT=${SMOKE_TIMEOUT:-300}
DATA_DIR=${GHEVENTS_DATA_DIR:-$GHEVENTS_ROOT/../shared/data}
HOUR_FILE=$DATA_DIR/gharchive/2015-01-01-0.json.gz
ENDPOINT=http://127.0.0.1:4566
SUFFIX=$$-$RANDOM
BUCKET=ghevents-smoke-$SUFFIX
QUEUE=ghevents-smoke-$SUFFIX
DB=ghevents_smoke_${SUFFIX//-/_}

[ -f "$HOUR_FILE" ] || die "GH Archive hour not found: $HOUR_FILE (set GHEVENTS_DATA_DIR)"

tmp=$(mktemp -d)
started_localstack= started_postgres= sim_pid= watch_pid= queue_url= admin_url= http_pid= hours_url=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [ -n "$watch_pid" ]; then
    log "stopping cargo lambda watch (pid $watch_pid)"
    kill -TERM -- "-$watch_pid" 2>/dev/null || kill -TERM "$watch_pid" 2>/dev/null
    wait "$watch_pid" 2>/dev/null
  fi
  if [ -n "$sim_pid" ]; then
    log "stopping github-sim (pid $sim_pid)"
    kill -TERM "$sim_pid" 2>/dev/null
    wait "$sim_pid" 2>/dev/null
  fi
  if [ -n "$http_pid" ]; then
    kill -TERM "$http_pid" 2>/dev/null
    wait "$http_pid" 2>/dev/null
  fi
  if [ -n "$queue_url" ]; then awsl sqs delete-queue --queue-url "$queue_url" >/dev/null 2>&1; fi
  if [ -n "$hours_url" ]; then awsl sqs delete-queue --queue-url "$hours_url" >/dev/null 2>&1; fi
  awsl s3 rb "s3://$BUCKET" --force >/dev/null 2>&1
  if [ -n "$admin_url" ]; then psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; fi
  if [ -n "$started_localstack" ]; then scripts/localstack.sh stop; fi
  if [ -n "$started_postgres" ]; then scripts/postgres.sh stop; fi
  if [ "$rc" != 0 ]; then
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      log "last lines of $(basename "$f"):"
      tail -n 30 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every second until it succeeds.
wait_for() {
  local secs=$1 what=$2 start
  shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    [ $(($(date +%s) - start)) -lt "$secs" ] || die "$what not ready after $secs s"
    sleep 1
  done
  log "$what ready after $(($(date +%s) - start)) s"
}

check() { # check DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then log "ok: $1 = $3"; else die "FAILED: $1: expected $2, got $3"; fi
}

# emf_check METRIC N EXPECTED_JSON: the function output in watch.log holds exactly N EMF
# documents declaring METRIC, each valid after the EMF specification (an _aws object with an
# integer millisecond Timestamp, CloudWatchMetrics directives with a Namespace, at most 30
# dimension keys per set, each a top-level string, at most 100 metrics, each a top-level
# number, units CloudWatch knows), namespace ghevents; the last one has the values in
# EXPECTED_JSON ({"Metric": value, ...}). Prints that last document.
emf_check() {
  python3 - "$tmp/watch.log" "$1" "$2" "$3" <<'PY'
import json, sys
path, metric, n, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
         "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
         "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
         "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
         "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}
def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
def validate(d):
    aws = d.get("_aws")
    assert isinstance(aws, dict), "no _aws object"
    ts = aws.get("Timestamp")
    assert isinstance(ts, int) and not isinstance(ts, bool), f"Timestamp not an integer: {ts!r}"
    assert ts > 10**12, f"Timestamp not in milliseconds: {ts}"
    dirs = aws.get("CloudWatchMetrics")
    assert isinstance(dirs, list) and dirs, "no CloudWatchMetrics directives"
    for x in dirs:
        assert isinstance(x.get("Namespace"), str) and 0 < len(x["Namespace"]) <= 1024, "Namespace"
        for dims in x["Dimensions"]:
            assert len(dims) <= 30, "more than 30 dimensions"
            for k in dims:
                assert isinstance(d.get(k), str), f"dimension {k} is not a top-level string"
        assert len(x["Metrics"]) <= 100, "more than 100 metrics"
        for m in x["Metrics"]:
            name = m["Name"]
            assert "Unit" not in m or m["Unit"] in UNITS, f"unit of {name}: {m.get('Unit')}"
            assert num(d.get(name)), f"metric {name} is not a top-level number: {d.get(name)!r}"
docs = []
for line in open(path, encoding="utf-8", errors="replace"):
    start = line.find('{"')
    while start >= 0:
        try:
            d = json.loads(line[start:])
        except ValueError:
            start = line.find('{"', start + 1)
            continue
        if isinstance(d, dict) and "_aws" in d:
            docs.append(d)
        break
mine = [d for d in docs
        if any(m["Name"] == metric for x in d.get("_aws", {}).get("CloudWatchMetrics", [])
               for m in x.get("Metrics", []))]
if len(mine) != n:
    sys.exit(f"expected {n} EMF line(s) declaring {metric}, found {len(mine)}")
for d in mine:
    try:
        validate(d)
    except (AssertionError, KeyError, TypeError) as e:
        sys.exit(f"invalid EMF line ({e}): {json.dumps(d)}")
last = mine[-1]
ns = {x["Namespace"] for x in last["_aws"]["CloudWatchMetrics"]}
if ns != {"ghevents"}:
    sys.exit(f"namespace {ns}, expected ghevents")
for k, v in expected.items():
    if last.get(k) != v:
        sys.exit(f"{k} = {last.get(k)!r}, expected {v!r}: {json.dumps(last)}")
print(json.dumps(last, sort_keys=True))
PY
}

# --- services -----------------------------------------------------------------------------
pg_before=
if scripts/postgres.sh status >/dev/null 2>&1; then pg_before=1; fi
admin_url=$(scripts/postgres.sh ensure | tail -n 1)
if [ -z "$pg_before" ] && scripts/postgres.sh status >/dev/null 2>&1; then started_postgres=1; fi
if ! scripts/localstack.sh status >/dev/null 2>&1; then
  started_localstack=1
  scripts/localstack.sh start
fi
AWS_BIN=$(scripts/localstack.sh env)
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
printf '[default]\ns3 =\n    addressing_style = path\n' >"$tmp/aws-config"
export AWS_CONFIG_FILE=$tmp/aws-config AWS_SHARED_CREDENTIALS_FILE=$tmp/aws-credentials
awsl() { "$AWS_BIN/aws" --endpoint-url "$ENDPOINT" "$@"; }

psql -q "$admin_url" -c "CREATE DATABASE $DB" >/dev/null
db_url=$(python3 - "$admin_url" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)
sql() { psql -qAt "$db_url" -c "$1"; }
awsl s3api create-bucket --bucket "$BUCKET" >/dev/null
queue_url=$(awsl sqs create-queue --queue-name "$QUEUE" --attributes VisibilityTimeout=300 --query QueueUrl --output text)
queue_arn=$(awsl sqs get-queue-attributes --queue-url "$queue_url" --attribute-names QueueArn --query Attributes.QueueArn --output text)
hours_url=$(awsl sqs create-queue --queue-name "$QUEUE-hours" --attributes VisibilityTimeout=900 --query QueueUrl --output text)
hours_arn=$(awsl sqs get-queue-attributes --queue-url "$hours_url" --attribute-names QueueArn --query Attributes.QueueArn --output text)
log "database $DB, bucket $BUCKET, queues $queue_url $hours_url"

# --- binaries -----------------------------------------------------------------------------
cargo_lambda_path=$(scripts/cargo-lambda.sh install | tail -n 1)
eval "$cargo_lambda_path"
log "building github-sim, ghevents and the three functions (debug)"
cargo build -q -p github-sim -p ghevents-cli -p ghevents-ingest -p ghevents-enrich -p ghevents-archive

# --- GitHub stand-in ----------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$GHEVENTS_ROOT/target}
"$target_dir/debug/github-sim" --file "$HOUR_FILE" --port 0 --initial 300 --manual \
  >"$tmp/sim.url" 2>"$tmp/github-sim.log" &
sim_pid=$!
wait_for 60 github-sim grep -q '^http://' "$tmp/sim.url"
sim_url=$(grep -m1 '^http://' "$tmp/sim.url")
log "github-sim at $sim_url"

# --- GH Archive stand-in: the hour files under their archive names -----------------------
python3 -m http.server 0 --bind 127.0.0.1 --directory "$DATA_DIR/gharchive" >"$tmp/gharchive.log" 2>&1 &
http_pid=$!
wait_for 60 "GH Archive stand-in" grep -q 'Serving HTTP' "$tmp/gharchive.log"
gharchive_url=$(sed -n 's|.*(\(http://[^)]*\)).*|\1|p' "$tmp/gharchive.log" | head -n 1)
gharchive_url=${gharchive_url%/}
log "GH Archive stand-in at $gharchive_url"

# --- the functions under the runtime API emulator -----------------------------------------
cat >"$tmp/functions.env" <<EOF
DATABASE_URL=$db_url
GITHUB_API_URL=$sim_url
RAW_PAYLOAD_STORE=s3
RAW_PAYLOAD_BUCKET=$BUCKET
RAW_PAYLOAD_PREFIX=raw/
ENRICH_QUEUE_URL=$queue_url
GHARCHIVE_URL=$gharchive_url
ARCHIVE_QUEUE_URL=$hours_url
AWS_ENDPOINT_URL=$ENDPOINT
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
LOG_FORMAT=json
RUST_LOG=info
EOF
set -m # own process group, so cleanup ends watch and the functions it started
cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$PORT" --env-file "$tmp/functions.env" \
  >"$tmp/watch.log" 2>&1 &
watch_pid=$!
set +m
port_open() { python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1', $PORT)))"; }
wait_for "$WAIT" "cargo lambda watch on 127.0.0.1:$PORT" port_open

invoke() { # invoke FUNCTION DATA_FILE OUT
  timeout "$WAIT" cargo lambda invoke "$1" -A 127.0.0.1 -P "$PORT" --data-file "$2" --output-format json >"$3" \
    || die "cargo lambda invoke $1 failed: $(cat "$3" 2>/dev/null)"
}

# --- ingest -------------------------------------------------------------------------------
log "invoking ingest with a scheduled event"
invoke ingest functions/ingest/events/scheduled.json "$tmp/ingest.json"
log "ingest answered: $(jq -c '{outcome, outbox_sent, pages: .summary.pages, new_events: .summary.new_events, new_push_events: .summary.new_push_events}' "$tmp/ingest.json")"
check "ingest outcome" completed "$(jq -r .outcome "$tmp/ingest.json")"
check "events stored" 300 "$(sql 'SELECT count(*) FROM github_events')"
check "events whose raw bytes are in S3" 300 "$(sql 'SELECT count(*) FROM github_events WHERE raw IS NULL AND raw_object_key IS NOT NULL')"
check "S3 objects (one per page)" 3 "$(awsl s3api list-objects-v2 --bucket "$BUCKET" --query 'length(Contents)' --output text)"
pushes=$(sql 'SELECT count(*) FROM push_events')
[ "$pushes" -gt 0 ] || die "no push events stored"
check "push events not enqueued" 0 "$(sql 'SELECT count(*) FROM push_events WHERE enqueued_at IS NULL')"
line=$(emf_check IngestCycleSuccess 1 \
  '{"IngestCycleSuccess": 1, "NewEvents": 300, "Pages": 3, "Duplicates": 0, "GapSuspected": 0}') \
  || die "ingest's EMF line: $line"
log "ok: ingest printed one valid EMF line: $line"

# --- the queue ----------------------------------------------------------------------------
: >"$tmp/messages.jsonl"
start=$(date +%s)
while [ "$(wc -l <"$tmp/messages.jsonl")" -lt "$pushes" ]; do
  [ $(($(date +%s) - start)) -lt 60 ] || break
  awsl sqs receive-message --queue-url "$queue_url" --max-number-of-messages 10 --wait-time-seconds 1 \
    --output json | jq -c '.Messages // [] | .[]' >>"$tmp/messages.jsonl"
done
# Anything more would be a duplicate.
awsl sqs receive-message --queue-url "$queue_url" --max-number-of-messages 10 --wait-time-seconds 2 \
  --output json | jq -c '.Messages // [] | .[]' >>"$tmp/messages.jsonl"
check "SQS messages (one per push event)" "$pushes" "$(wc -l <"$tmp/messages.jsonl" | tr -d ' ')"
check "distinct push ids in the messages" "$pushes" "$(jq -r '.Body | fromjson | .push_id' "$tmp/messages.jsonl" | sort -u | wc -l | tr -d ' ')"

# --- enrich -------------------------------------------------------------------------------
head -n 10 "$tmp/messages.jsonl" | jq -s --arg arn "$queue_arn" '{Records: map({
  messageId: .MessageId, receiptHandle: .ReceiptHandle, body: .Body, md5OfBody: .MD5OfBody,
  attributes: {}, messageAttributes: {}, eventSource: "aws:sqs", eventSourceARN: $arn,
  awsRegion: "us-east-1"})}' >"$tmp/sqs-event.json"
batch_ids=$(jq -r '.Records[].body | fromjson | .push_id' "$tmp/sqs-event.json" | paste -sd, -)
log "invoking enrich with an SQS event of 10 messages"
invoke enrich "$tmp/sqs-event.json" "$tmp/enrich.json"
log "enrich answered: $(jq -c . "$tmp/enrich.json")"
check "batch item failures" 0 "$(jq '.batchItemFailures | length' "$tmp/enrich.json")"
check "push events of the batch completed" 10 "$(sql "SELECT count(*) FROM push_events WHERE push_id IN ($batch_ids) AND enrichment_status = 'completed'")"
check "push events enriched outside the batch" 0 "$(sql "SELECT count(*) FROM push_events WHERE push_id NOT IN ($batch_ids) AND enrichment_status <> 'pending'")"
line=$(emf_check EnrichCompleted 1 \
  "{\"EnrichCompleted\": 10, \"EnrichFailed\": 0, \"EnrichDeferred\": 0, \"EnrichBacklog\": $((pushes - 10))}") \
  || die "enrich's EMF line: $line"
log "ok: enrich printed one valid EMF line: $line"

log "the same batch again (a duplicate delivery)"
invoke enrich "$tmp/sqs-event.json" "$tmp/enrich-again.json"
check "batch item failures on redelivery" 0 "$(jq '.batchItemFailures | length' "$tmp/enrich-again.json")"
line=$(emf_check EnrichCompleted 2 '{"EnrichCompleted": 0, "EnrichRequests": 0}') \
  || die "enrich's EMF line on redelivery: $line"
log "ok: the redelivery's EMF line says it did nothing: $line"

# --- archive --------------------------------------------------------------------------------
hour=2015-01-01T00
hour_lines=$(gzip -dc "$HOUR_FILE" | grep -c .)
log "ghevents backfill --from $hour --to $hour --queue (the hour onto the hours queue)"
DATABASE_URL=$db_url AWS_ENDPOINT_URL=$ENDPOINT "$target_dir/debug/ghevents" backfill --from "$hour" --to "$hour" \
  --queue "$hours_url" >"$tmp/backfill.out" 2>"$tmp/backfill.log" || die "backfill --queue failed: $(cat "$tmp/backfill.out" "$tmp/backfill.log")"
log "backfill printed: $(tr '\n' ' ' <"$tmp/backfill.out")"
awsl sqs receive-message --queue-url "$hours_url" --max-number-of-messages 10 --wait-time-seconds 2 \
  --output json | jq -c '.Messages // [] | .[]' >"$tmp/hours.jsonl"
check "hour messages" 1 "$(wc -l <"$tmp/hours.jsonl" | tr -d ' ')"
check "hour message body" "{\"hour\":\"$hour\"}" "$(jq -r .Body "$tmp/hours.jsonl")"
jq -s --arg arn "$hours_arn" '{Records: map({
  messageId: .MessageId, receiptHandle: .ReceiptHandle, body: .Body, md5OfBody: .MD5OfBody,
  attributes: {}, messageAttributes: {}, eventSource: "aws:sqs", eventSourceARN: $arn,
  awsRegion: "us-east-1"})}' "$tmp/hours.jsonl" >"$tmp/hours-event.json"
log "invoking archive with the hour's SQS event"
invoke archive "$tmp/hours-event.json" "$tmp/archive.json"
log "archive answered: $(jq -c . "$tmp/archive.json")"
check "archive batch item failures" 0 "$(jq '.batchItemFailures | length' "$tmp/archive.json")"
check "archive hour status" done "$(sql "SELECT status FROM archive_hours WHERE hour = '2015-01-01 00:00+00'")"
check "archive hour lines" "$hour_lines" "$(sql "SELECT lines FROM archive_hours WHERE hour = '2015-01-01 00:00+00'")"
check "events already polled (counted, not stored again)" 300 "$(sql "SELECT already_present FROM archive_hours WHERE hour = '2015-01-01 00:00+00'")"
check "events stored (the hour's, each once)" "$hour_lines" "$(sql 'SELECT count(DISTINCT event_id) FROM github_events')"
check "rows in github_events" "$hour_lines" "$(sql 'SELECT count(*) FROM github_events')"
check "S3 objects of the hour" 1 "$(awsl s3api list-objects-v2 --bucket "$BUCKET" --prefix raw/archive/ --query 'length(Contents)' --output text)"
check "archived events pointing to the hour's object" "$((hour_lines - 300))" \
  "$(sql "SELECT count(*) FROM github_events WHERE raw_object_key = 'raw/archive/2015/01/01/00.json.gz'")"
line=$(emf_check ArchiveHoursDone 1 '{"ArchiveHoursDone": 1, "ArchiveHoursFailed": 0}') \
  || die "archive's EMF line: $line"
log "ok: archive printed one valid EMF line: $line"

log "the same message again (a duplicate delivery)"
invoke archive "$tmp/hours-event.json" "$tmp/archive-again.json"
check "batch item failures on redelivery" 0 "$(jq '.batchItemFailures | length' "$tmp/archive-again.json")"
check "rows after the redelivery" "$hour_lines" "$(sql 'SELECT count(*) FROM github_events')"

log "invoking archive with a scheduled event"
invoke archive functions/archive/events/scheduled.json "$tmp/archive-tick.json"
log "archive answered: $(jq -c . "$tmp/archive-tick.json")"
last_hour=$(date -u -d '1 hour ago' +%Y-%m-%dT%H)
jq -e --arg h "$last_hour" '.enqueued | index($h) != null' "$tmp/archive-tick.json" >/dev/null \
  || die "FAILED: the scheduled invocation did not enqueue the last complete hour $last_hour"
awsl sqs receive-message --queue-url "$hours_url" --max-number-of-messages 10 --wait-time-seconds 2 \
  --output json | jq -r '.Messages // [] | .[] | .Body' >"$tmp/tick-bodies.txt"
grep -qx "{\"hour\":\"$last_hour\"}" "$tmp/tick-bodies.txt" || die "FAILED: no message for $last_hour on the hours queue: $(cat "$tmp/tick-bodies.txt")"
log "ok: the schedule enqueued $last_hour"

echo "lambda smoke test passed: ingest stored 300 events (3 S3 objects) and queued $pushes push ids; enrich completed its batch of 10; archive imported $hour ($hour_lines lines, 1 S3 object) from its queue message and the schedule enqueued $last_hour"
