#!/usr/bin/env bash
# The local main job on any machine: finds a PostgreSQL (or starts one that keeps its data),
# builds ghevents, applies the migrations and runs `ghevents run`.
#
#   scripts/run-local.sh [--debug] [ARGS…]
#
#   --debug   build and run the debug binary (faster to build, slower to run)
#   ARGS      passed to `ghevents run` (e.g. --no-enrich)
#
# The database, as `scripts/postgres.sh local` finds it: $DATABASE_URL if it connects, else
# the server on 127.0.0.1:5432 (database `ghevents`, created if missing), else a persistent
# cluster of its own on 127.0.0.1:55433 (data in ~/.local/share/ghevents/postgres, or
# /var/lib/ghevents/postgres as root; `scripts/postgres.sh stop-local` stops it, the data
# stays). The URL used is printed first. Every other variable of the README's table applies.
#
# Environment:
#   GHEVENTS_BIN       a ghevents binary to run instead of building one
#   CARGO_TARGET_DIR   where cargo builds (default: target/ in the repository)
set -euo pipefail

GHEVENTS_LOG_TAG=run-local
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

profile=release
args=()
for arg in "$@"; do
  case $arg in
    --debug) profile=debug ;;
    *) args+=("$arg") ;;
  esac
done

DATABASE_URL=$("$GHEVENTS_ROOT/scripts/postgres.sh" local | tail -n 1)
[ -n "$DATABASE_URL" ] || die "no database URL"
export DATABASE_URL
log "DATABASE_URL=$DATABASE_URL"

if [ -n "${GHEVENTS_BIN:-}" ]; then
  bin=$GHEVENTS_BIN
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) or set GHEVENTS_BIN"
  target=${CARGO_TARGET_DIR:-$GHEVENTS_ROOT/target}
  build=(cargo build --bin ghevents)
  [ "$profile" = release ] && build+=(--release)
  log "building ghevents ($profile)"
  (cd "$GHEVENTS_ROOT" && "${build[@]}") || die "cargo build failed"
  bin=$target/$profile/ghevents
fi
[ -x "$bin" ] || die "$bin is not an executable"

"$bin" migrate
exec "$bin" run ${args[@]+"${args[@]}"}
