#!/usr/bin/env bash
# A PostgreSQL the tests can use, whatever the machine has.
#
#   scripts/postgres.sh ensure   print (last line of stdout) a base DATABASE_URL for a role that
#                                may CREATE DATABASE, trying in order:
#                                  1. $DATABASE_URL, if set and reachable;
#                                  2. the server on $GHEVENTS_PG_HOST:$GHEVENTS_PG_PORT
#                                     (default 127.0.0.1:5432) as user postgres, then root;
#                                  3. a throwaway cluster made with initdb/pg_ctl on port
#                                     $GHEVENTS_PG_THROWAWAY_PORT (default 55432), trust auth,
#                                     data and socket under $GHEVENTS_PG_THROWAWAY_DIR
#                                     (default ${TMPDIR:-/tmp}/ghevents-postgres-<port>);
#                                fails, naming the package to install, if none of these works.
#   scripts/postgres.sh stop     stop and delete the throwaway cluster, if this script made one
#   scripts/postgres.sh status   say whether the throwaway cluster runs (exit 0 if it does)
#
#   scripts/postgres.sh local    print (last line of stdout) a DATABASE_URL for running ghevents
#                                on this machine, trying in order:
#                                  1. $DATABASE_URL, if set and reachable (used as it is);
#                                  2. the server on $GHEVENTS_PG_HOST:$GHEVENTS_PG_PORT as user
#                                     postgres, then root: its database `ghevents`, created if
#                                     missing;
#                                  3. a persistent cluster (kept across runs and reboots;
#                                     durable settings) on port $GHEVENTS_PG_LOCAL_PORT
#                                     (default 55433), data under $GHEVENTS_PG_LOCAL_DIR (default
#                                     ${XDG_DATA_HOME:-~/.local/share}/ghevents/postgres, or
#                                     /var/lib/ghevents/postgres as root), started if stopped,
#                                     made with initdb the first time; its database `ghevents`.
#   scripts/postgres.sh stop-local   stop the persistent cluster; its data stays
#   scripts/postgres.sh status-local say whether the persistent cluster runs (exit 0 if it does)
#
# GHEVENTS_PG_BINDIR: where to find initdb/pg_ctl/postgres (default: PATH, then the newest
# /usr/lib/postgresql/*/bin).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_HOST=${GHEVENTS_PG_HOST:-127.0.0.1}
PG_PORT=${GHEVENTS_PG_PORT:-5432}
TW_PORT=${GHEVENTS_PG_THROWAWAY_PORT:-55432}
TW_DIR=${GHEVENTS_PG_THROWAWAY_DIR:-${TMPDIR:-/tmp}/ghevents-postgres-$TW_PORT}
TW_DATA=$TW_DIR/data
TW_SOCK=$TW_DIR/sock
TW_LOG=$TW_DIR/postgres.log
TW_MARK=$TW_DIR/.made-by-ghevents
TW_URL=postgres://postgres@127.0.0.1:$TW_PORT/postgres
if [ "$(id -u)" = 0 ]; then
  LOCAL_DEFAULT_DIR=/var/lib/ghevents/postgres
else
  LOCAL_DEFAULT_DIR=${XDG_DATA_HOME:-$HOME/.local/share}/ghevents/postgres
fi
LOCAL_PORT=${GHEVENTS_PG_LOCAL_PORT:-55433}
LOCAL_DIR=${GHEVENTS_PG_LOCAL_DIR:-$LOCAL_DEFAULT_DIR}
LOCAL_DB=ghevents
INSTALL_HINT="install PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL"

export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-3}

# Finds a PostgreSQL program: GHEVENTS_PG_BINDIR if set (only there), else PATH, else the
# newest /usr/lib/postgresql/*/bin.
pg_bin() {
  local name=$1 dir
  if [ -n "${GHEVENTS_PG_BINDIR:-}" ]; then
    [ -x "$GHEVENTS_PG_BINDIR/$name" ] && { echo "$GHEVENTS_PG_BINDIR/$name"; return 0; }
    return 1
  fi
  command -v "$name" 2>/dev/null && return 0
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4nr); do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  return 1
}

# Client programs are looked up regardless of GHEVENTS_PG_BINDIR.
psql_bin() { GHEVENTS_PG_BINDIR='' pg_bin psql; }

# can_create_db URL: exit 0 if URL connects and its role is superuser or has CREATEDB.
can_create_db() {
  local psql out
  psql=$(psql_bin) || return 1
  out=$("$psql" "$1" -X -w -At -v ON_ERROR_STOP=1 \
    -c 'select rolsuper or rolcreatedb from pg_roles where rolname = current_user' 2>/dev/null) || return 1
  [ "$out" = t ]
}

# Runs a command as an unprivileged user when root (PostgreSQL refuses to run as root).
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$(pg_os_user)" -- "$@"
  else
    "$@"
  fi
}

pg_os_user() {
  if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

# The persistent cluster instead of the throwaway one, for the functions below.
use_local_cluster() {
  TW_PORT=$LOCAL_PORT
  TW_DIR=$LOCAL_DIR
  TW_DATA=$TW_DIR/data
  TW_SOCK=$TW_DIR/sock
  TW_LOG=$TW_DIR/postgres.log
  TW_MARK=$TW_DIR/.made-by-ghevents
  TW_URL=postgres://postgres@127.0.0.1:$TW_PORT/postgres
  TW_KIND=persistent
}
TW_KIND=throwaway

throwaway_running() {
  local pg_ctl
  [ -f "$TW_MARK" ] && [ -f "$TW_DATA/PG_VERSION" ] || return 1
  pg_ctl=$(pg_bin pg_ctl) || return 1
  (cd / && as_pg_user "$pg_ctl" -D "$TW_DATA" status >/dev/null 2>&1)
}

start_throwaway() {
  local initdb pg_ctl
  initdb=$(pg_bin initdb) || return 1
  pg_ctl=$(pg_bin pg_ctl) || return 1
  local settings
  if throwaway_running && can_create_db "$TW_URL"; then
    log "reusing the $TW_KIND cluster in $TW_DIR"
    return 0
  fi
  if [ -e "$TW_DIR" ] && [ ! -f "$TW_MARK" ]; then
    die "$TW_DIR exists but was not made by this script; remove it or set GHEVENTS_PG_THROWAWAY_DIR / GHEVENTS_PG_LOCAL_DIR"
  fi
  log "starting a $TW_KIND PostgreSQL cluster in $TW_DIR on 127.0.0.1:$TW_PORT"
  mkdir -p "$TW_DIR"
  touch "$TW_MARK"
  mkdir -p "$TW_SOCK"
  if [ "$(id -u)" = 0 ]; then
    chown -R "$(pg_os_user)" "$TW_DIR"
    # The server's user must be able to reach the directory.
    chmod o+x "$(dirname "$TW_DIR")" 2>/dev/null || true
  fi
  chmod 700 "$TW_DIR"
  # PostgreSQL's programs need a working directory they may read.
  cd /
  if [ ! -f "$TW_DATA/PG_VERSION" ]; then
    as_pg_user "$initdb" -D "$TW_DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TW_LOG.initdb" 2>&1 || {
      cat "$TW_LOG.initdb" >&2
      die "initdb failed"
    }
  fi
  settings="-c listen_addresses=127.0.0.1 -p $TW_PORT -c unix_socket_directories=$TW_SOCK -c max_connections=200"
  if [ "$TW_KIND" = throwaway ]; then
    # Durability is not wanted for a throwaway test cluster: fsync off makes it faster.
    settings="$settings -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  as_pg_user "$pg_ctl" -D "$TW_DATA" -l "$TW_LOG" -w -t 60 -o "$settings" start >&2 || {
    tail -n 30 "$TW_LOG" >&2 || true
    die "pg_ctl start failed (log: $TW_LOG)"
  }
  can_create_db "$TW_URL" || die "throwaway cluster started but $TW_URL does not answer"
}

cmd_ensure() {
  local user url
  if [ -n "${DATABASE_URL:-}" ]; then
    if can_create_db "$DATABASE_URL"; then
      log "using DATABASE_URL from the environment"
      echo "$DATABASE_URL"
      return 0
    fi
    log "DATABASE_URL is set but does not connect (or may not CREATE DATABASE); looking further"
  fi
  if psql_bin >/dev/null; then
    for user in postgres root; do
      url=postgres://$user@$PG_HOST:$PG_PORT/postgres
      if can_create_db "$url"; then
        log "using the server on $PG_HOST:$PG_PORT as $user"
        echo "$url"
        return 0
      fi
    done
    log "no usable server on $PG_HOST:$PG_PORT (tried users postgres, root)"
  else
    log "psql not found, so no server can be probed"
  fi
  if pg_bin initdb >/dev/null && pg_bin pg_ctl >/dev/null && psql_bin >/dev/null; then
    start_throwaway
    echo "$TW_URL"
    return 0
  fi
  die "no reachable PostgreSQL and no initdb/pg_ctl/psql to start one: $INSTALL_HINT"
}

cmd_stop() {
  local pg_ctl
  if [ ! -f "$TW_MARK" ]; then
    log "no throwaway cluster made by this script in $TW_DIR; nothing to stop"
    return 0
  fi
  if throwaway_running; then
    pg_ctl=$(pg_bin pg_ctl)
    log "stopping the throwaway cluster in $TW_DIR"
    (cd / && as_pg_user "$pg_ctl" -D "$TW_DATA" -m fast -w -t 60 stop >&2)
  fi
  rm -rf "$TW_DIR"
  log "removed $TW_DIR"
}

cmd_status() {
  if throwaway_running; then
    log "$TW_KIND cluster running: $TW_URL (data in $TW_DATA)"
    return 0
  fi
  log "no $TW_KIND cluster running in $TW_DIR"
  return 1
}

# can_connect URL: exit 0 if URL connects.
can_connect() {
  local psql
  psql=$(psql_bin) || return 1
  "$psql" "$1" -X -w -At -v ON_ERROR_STOP=1 -c 'select 1' >/dev/null 2>&1
}

# ensure_database ADMIN_URL: prints ADMIN_URL with database ghevents, creating it if missing.
ensure_database() {
  local psql url exists
  psql=$(psql_bin) || die "psql not found"
  url=${1%/*}/$LOCAL_DB
  exists=$("$psql" "$1" -X -w -At -v ON_ERROR_STOP=1 \
    -c "select 1 from pg_database where datname = '$LOCAL_DB'" 2>/dev/null) || die "cannot query $1"
  if [ "$exists" != 1 ]; then
    log "creating database $LOCAL_DB"
    "$psql" "$1" -X -w -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $LOCAL_DB" >&2 ||
      die "cannot create database $LOCAL_DB on ${1%/*}"
  fi
  echo "$url"
}

cmd_local() {
  local user url
  if [ -n "${DATABASE_URL:-}" ]; then
    if ! psql_bin >/dev/null || can_connect "$DATABASE_URL"; then
      log "using DATABASE_URL from the environment"
      echo "$DATABASE_URL"
      return 0
    fi
    log "DATABASE_URL is set but does not connect; looking further"
  fi
  if psql_bin >/dev/null; then
    for user in postgres root; do
      url=postgres://$user@$PG_HOST:$PG_PORT/postgres
      if can_create_db "$url"; then
        log "using the server on $PG_HOST:$PG_PORT as $user"
        ensure_database "$url"
        return 0
      fi
    done
    log "no usable server on $PG_HOST:$PG_PORT (tried users postgres, root)"
  fi
  if pg_bin initdb >/dev/null && pg_bin pg_ctl >/dev/null && psql_bin >/dev/null; then
    use_local_cluster
    start_throwaway
    ensure_database "$TW_URL"
    return 0
  fi
  die "no reachable PostgreSQL and no initdb/pg_ctl/psql to start one: $INSTALL_HINT"
}

cmd_stop_local() {
  local pg_ctl
  use_local_cluster
  if throwaway_running; then
    pg_ctl=$(pg_bin pg_ctl)
    log "stopping the persistent cluster in $TW_DIR (its data stays)"
    (cd / && as_pg_user "$pg_ctl" -D "$TW_DATA" -m fast -w -t 60 stop >&2)
  else
    log "the persistent cluster in $TW_DIR is not running"
  fi
}

case ${1:-} in
  ensure) cmd_ensure ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  local) cmd_local ;;
  stop-local) cmd_stop_local ;;
  status-local)
    use_local_cluster
    cmd_status
    ;;
  *)
    echo "usage: $0 {ensure|stop|status|local|stop-local|status-local}" >&2
    exit 2
    ;;
esac
