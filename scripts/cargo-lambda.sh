#!/usr/bin/env bash
# cargo-lambda (with zig, both from PyPI) in a cached venv, for building the Lambda functions.
#
#   scripts/cargo-lambda.sh install   install (once) and print, as the last line of stdout,
#                                     the `export PATH=...` that makes `cargo lambda` work
#   scripts/cargo-lambda.sh bin-dir   print the dir to put on PATH; exit 1 if not installed
#
# The bin dir holds only a `cargo-lambda` wrapper (not the venv's python/pip), which puts the
# venv first on PATH for cargo-lambda itself so that it finds zig (`python -m ziglang`).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONSTRAINTS=$GHEVENTS_ROOT/.ci/cargo-lambda-constraints.txt
BIN_DIR=$GHEVENTS_CACHE/bin

write_wrapper() {
  local venv=$1 tmp
  mkdir -p "$BIN_DIR"
  tmp=$(mktemp "$BIN_DIR/.cargo-lambda.XXXXXX")
  cat >"$tmp" <<WRAPPER
#!/bin/sh
# Made by scripts/cargo-lambda.sh: runs cargo-lambda from $venv
PATH="$venv/bin:\$PATH"
export PATH
exec "$venv/bin/cargo-lambda" "\$@"
WRAPPER
  chmod 755 "$tmp"
  mv -f "$tmp" "$BIN_DIR/cargo-lambda"
}

# The venv the wrapper points at, if that venv is still there.
installed() {
  local venv
  [ -x "$BIN_DIR/cargo-lambda" ] || return 1
  venv=$(sed -n 's|^exec "\(.*\)/bin/cargo-lambda".*|\1|p' "$BIN_DIR/cargo-lambda")
  [ -n "$venv" ] && [ -f "$venv/.ghevents-installed" ] && [ -x "$venv/bin/cargo-lambda" ]
}

cmd_install() {
  local venv version
  venv=$(ensure_venv cargo-lambda "$CONSTRAINTS" cargo-lambda ziglang)
  write_wrapper "$venv"
  version=$(PATH="$BIN_DIR:$PATH" cargo lambda --version) ||
    die "'cargo lambda --version' failed after install (is cargo on PATH?)"
  log "$version; add it to PATH with the line below"
  echo "export PATH=\"$BIN_DIR:\$PATH\""
}

case ${1:-} in
  install) cmd_install ;;
  bin-dir)
    installed || exit 1
    echo "$BIN_DIR"
    ;;
  *)
    echo "usage: $0 {install|bin-dir}" >&2
    exit 2
    ;;
esac
