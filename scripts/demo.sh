#!/usr/bin/env bash
# Try ghevents offline: github-sim replays a real GH Archive hour as GitHub's live events feed
# (with its rate limit compressed to 60 requests a minute and X-Poll-Interval: 1), and
# `ghevents run` ingests it into a fresh database `ghevents_demo` for a while; then
# `ghevents status` shows what was stored. Everything started here is stopped on exit.
#
#   scripts/demo.sh [--seconds N] [--file FILE] [--rate EVENTS_PER_S] [--release]
#
#   --seconds N   how long `ghevents run` runs (default 30)
#   --file FILE   GH Archive file to replay (default: 2015-01-01-0.json.gz in the data dir)
#   --rate R      events the simulator releases per second after the first 300 (default 20)
#   --release     build and run the release binaries (slower to build, faster to run)
#
# Environment:
#   DATABASE_URL       a database on the Postgres server to use; `ghevents_demo` is created
#                      (dropped first) beside it (default postgres://postgres@127.0.0.1:5432/postgres)
#   GHEVENTS_DATA_DIR  the directory holding gharchive/ (default: ../shared/data beside the repo)
#   CARGO_TARGET_DIR   where cargo builds (default: target/ in the repo)
set -euo pipefail

say() { printf '[demo] %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=30
rate=20
profile=debug
file=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --file) file=${2:?--file needs a path}; shift 2 ;;
    --rate) rate=${2:?--rate needs a number}; shift 2 ;;
    --release) profile=release; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case $seconds in '' | *[!0-9]*) die "--seconds must be a whole number of seconds" ;; esac

data_dir=${GHEVENTS_DATA_DIR:-$root/../shared/data}
file=${file:-$data_dir/gharchive/2015-01-01-0.json.gz}
[ -f "$file" ] || die "GH Archive file not found: $file (set GHEVENTS_DATA_DIR to the directory holding gharchive/, or pass --file)"
file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")

admin_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
command -v psql >/dev/null || die "psql not found (install the PostgreSQL client, e.g. apt-get install postgresql-client)"
psql -X -q -At -d "$admin_url" -c 'SELECT 1' >/dev/null 2>&1 ||
  die "cannot reach Postgres at $admin_url (start one, or set DATABASE_URL to a database you may create databases beside)"
# The same server and options, database ghevents_demo.
demo_url=$(python3 - "$admin_url" <<'EOF'
import sys
url = sys.argv[1]
head, sep, query = url.partition("?")
slash = head.find("/", head.index("://") + 3)
print((head if slash < 0 else head[:slash]) + "/ghevents_demo" + (sep + query if sep else ""))
EOF
)

target=${CARGO_TARGET_DIR:-$root/target}
cargo_flags=()
[ "$profile" = release ] && cargo_flags=(--release)
say "building ghevents and github-sim ($profile)"
(cd "$root" && cargo build -q "${cargo_flags[@]}" -p ghevents-cli -p github-sim)
ghevents=$target/$profile/ghevents
sim=$target/$profile/github-sim

work=$target/demo
mkdir -p "$work"
sim_pid="" run_pid=""
cleanup() {
  local pid
  for pid in $run_pid $sim_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "database ghevents_demo on ${admin_url%%\?*} (dropped and created afresh)"
psql -X -q -d "$admin_url" -v ON_ERROR_STOP=1 \
  -c 'DROP DATABASE IF EXISTS ghevents_demo WITH (FORCE)' -c 'CREATE DATABASE ghevents_demo' >/dev/null

say "github-sim replaying $(basename "$file"): 300 events at once, then $rate/s; 60 requests a minute, X-Poll-Interval: 1"
: >"$work/sim.url"
RUST_LOG=${RUST_LOG:-github_sim=warn} "$sim" --file "$file" --port 0 --initial 300 --rate "$rate" --shuffle-block 8 \
  --window-secs 60 --limit-anon 60 --poll-interval 1 >"$work/sim.url" 2>"$work/sim.log" &
sim_pid=$!
url=""
for _ in $(seq 600); do
  url=$(head -n1 "$work/sim.url")
  [ -n "$url" ] && break
  kill -0 "$sim_pid" 2>/dev/null || die "github-sim stopped: $(tail -n5 "$work/sim.log")"
  sleep 0.1
done
[ -n "$url" ] || die "github-sim did not print its URL within 60 s (log: $work/sim.log)"
say "github-sim at $url"

say "ghevents run for $seconds s (one line per poll cycle; logs in $work/ghevents.log)"
DATABASE_URL=$demo_url GITHUB_API_URL=$url RUST_LOG=${RUST_LOG:-warn} "$ghevents" run 2>"$work/ghevents.log" &
run_pid=$!
for _ in $(seq "$seconds"); do
  kill -0 "$run_pid" 2>/dev/null || die "ghevents run stopped early: $(tail -n5 "$work/ghevents.log")"
  sleep 1
done
kill -INT "$run_pid"
status=0
wait "$run_pid" || status=$?
run_pid=""
[ "$status" -eq 0 ] || die "ghevents run exited with $status: $(tail -n5 "$work/ghevents.log")"

say "ghevents status"
DATABASE_URL=$demo_url GITHUB_API_URL=$url "$ghevents" status
released=$(python3 -c 'import json, sys, urllib.request; s = json.load(urllib.request.urlopen(sys.argv[1] + "/_sim/stats")); c = s["clients"].get("anonymous", {}); print(s["released"], len(s["served_ids"]), c.get("requests", 0), c.get("violations", 0))' "$url")
read -r n_released n_served n_requests n_violations <<<"$released"
say "github-sim: released $n_released events, served $n_served distinct ones in $n_requests requests, $n_violations rate-limit violations"
say "the data stays in ghevents_demo: psql ${demo_url%%\?*}"
