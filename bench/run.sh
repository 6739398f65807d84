#!/usr/bin/env bash
# The benchmarks, in one command: builds the release binaries, then runs bench/bench.py, which
# prints a table and writes target/bench/results.json (under 5 minutes on 2 cores, after the
# build).
#
#   bench/run.sh                       capture, import and footprint
#   bench/run.sh --only import         one part (capture, import, footprint; comma-separated)
#   bench/run.sh --only archive        the GH Archive hour (minutes; never part of the default run)
#   bench/run.sh --help                every option (feed rates, windows, repetitions, ...)
#   BENCH_PROFILE=dev bench/run.sh     the debug binaries, without a release build
#
# Needs: cargo, python3 (standard library only), psql and a Postgres reachable at DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres; the benchmark creates and drops its own
# ghevents_bench_* databases there), GNU time at /usr/bin/time (installed here from the Debian
# package `time` when missing and we may), and the GH Archive files in ../shared/data (or
# GHEVENTS_DATA_DIR).
set -euo pipefail

say() { printf '[bench] %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

for arg in "$@"; do
  if [ "$arg" = -h ] || [ "$arg" = --help ]; then
    exec python3 bench/bench.py --help
  fi
done

command -v cargo >/dev/null || die "cargo not found (install Rust: https://rustup.rs)"
command -v python3 >/dev/null || die "python3 not found"
command -v psql >/dev/null || die "psql not found (install the PostgreSQL client, e.g. apt-get install postgresql-client)"

# Peak RSS comes from GNU time's -v report; the shell keyword `time` has no such thing.
if [ ! -x /usr/bin/time ]; then
  if command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    say "/usr/bin/time is missing: installing the Debian package 'time'"
    { $sudo apt-get install -y -q time >/dev/null 2>&1 ||
      { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q time >/dev/null 2>&1; }; } ||
      die "could not install the package 'time' (run: apt-get install time), which provides /usr/bin/time"
  else
    die "/usr/bin/time (GNU time) is missing; install it (Debian/Ubuntu: apt-get install time)"
  fi
fi
/usr/bin/time -v true >/dev/null 2>&1 || die "/usr/bin/time is not GNU time (no -v); install GNU time"

# BENCH_PROFILE=dev measures the debug binaries instead (no release build; capture is bound by
# the feed, the budget and Postgres, not by ghevents' CPU; import and footprint are not
# comparable with release figures).
if [ "${BENCH_PROFILE:-release}" = dev ]; then
  say "building ghevents and github-sim (debug)"
  cargo build -q -p ghevents-cli -p github-sim
  dir="${CARGO_TARGET_DIR:-$root/target}/debug"
  exec python3 bench/bench.py --ghevents "$dir/ghevents" --sim "$dir/github-sim" "$@"
fi
say "building ghevents and github-sim (release)"
cargo build -q --release -p ghevents-cli -p github-sim
exec python3 bench/bench.py "$@"
