# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it; don't run it.
#
# Environment knobs:
#   GHEVENTS_CACHE_DIR  where venvs and runtime state live
#                       (default: ${XDG_CACHE_HOME:-$HOME/.cache}/ghevents)
#   GHEVENTS_PYTHON     the Python 3.11 interpreter to build venvs with
#                       (default: python3.11, then python3)

# shellcheck disable=SC2034 # used by the scripts that source this file
GHEVENTS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GHEVENTS_CACHE=${GHEVENTS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ghevents}
: "${GHEVENTS_LOG_TAG:=$(basename "$0")}"

log() { printf '[%s] %s\n' "$GHEVENTS_LOG_TAG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Prints the path of a Python 3.11 interpreter, or dies saying what is wrong.
# The LocalStack constraints are resolved for CPython 3.11 only.
find_python311() {
  local candidates cand ver
  if [ -n "${GHEVENTS_PYTHON:-}" ]; then
    candidates=$GHEVENTS_PYTHON
  else
    candidates="python3.11 python3"
  fi
  for cand in $candidates; do
    command -v "$cand" >/dev/null 2>&1 || continue
    ver=$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    if [ "$ver" = "3.11" ]; then
      command -v "$cand"
      return 0
    fi
    log "skipping $cand: it is Python $ver, not 3.11"
  done
  die "Python 3.11 is required (the pinned constraints are for CPython 3.11);" \
    "install it (e.g. 'apt-get install python3.11 python3.11-venv' or pyenv) or point GHEVENTS_PYTHON at one"
}

# Short, stable hash of the given files' contents and of any extra words.
content_hash() {
  local words=$1
  shift
  { cat "$@"; printf '%s' "$words"; } | sha256sum | cut -c1-16
}

# ensure_venv NAME CONSTRAINTS_FILE REQUIREMENT...
# Creates (once) a venv under $GHEVENTS_CACHE/venvs/NAME-<hash>, where the hash covers the
# constraints file and the requirements, and installs the requirements into it with
# `pip install -c CONSTRAINTS_FILE`. Prints the venv's path. A venv is only reused once
# its install finished (marker file), so an interrupted install is redone.
ensure_venv() {
  local name=$1 constraints=$2
  shift 2
  local key dir venvs py
  [ -f "$constraints" ] || die "constraints file not found: $constraints"
  key=$(content_hash "$*" "$constraints")
  venvs=$GHEVENTS_CACHE/venvs
  dir=$venvs/$name-$key
  if [ -f "$dir/.ghevents-installed" ] && "$dir/bin/python" -c '' 2>/dev/null; then
    printf '%s\n' "$dir"
    return 0
  fi
  mkdir -p "$venvs"
  (
    # Serialise concurrent installs of the same venv.
    if command -v flock >/dev/null 2>&1; then
      exec 9>"$venvs/$name.lock"
      flock 9
    fi
    if [ -f "$dir/.ghevents-installed" ] && "$dir/bin/python" -c '' 2>/dev/null; then
      exit 0
    fi
    py=$(find_python311)
    log "creating venv $dir with $py"
    rm -rf "$dir"
    "$py" -m venv "$dir" || die "could not create a venv with $py (Debian: apt-get install python3.11-venv)"
    log "pip install -c $(basename "$constraints") $*"
    "$dir/bin/python" -m pip install --quiet -c "$constraints" "$@" >&2 ||
      die "pip install failed for $name (see above)"
    touch "$dir/.ghevents-installed"
    # Drop venvs of the same name built from older constraints.
    local old
    for old in "$venvs/$name"-*; do
      [ -d "$old" ] && [ "$old" != "$dir" ] && rm -rf "$old"
    done
    exit 0
  ) || exit 1
  printf '%s\n' "$dir"
}
