#!/usr/bin/env bash
# Static checks for the deployment template, runnable without an AWS account.
#
#   infra/check.sh            check infra/template.yaml, then run infra/selftest.sh
#   infra/check.sh TEMPLATE   check TEMPLATE only (what the self-test uses)
#
# Checks, all of which run even when an earlier one fails:
#   1. cfn-lint                       (pinned in infra/requirements.txt)
#   2. sam validate --lint            (pinned in infra/requirements-sam.txt)
#   3. infra/check_iam.py             (no wildcard IAM grants)
#
# Tools live in cached venvs under ${XDG_CACHE_HOME:-$HOME/.cache}/ghevents/,
# rebuilt when their requirements file changes. The first run needs PyPI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ghevents"
python="${PYTHON:-python3.11}"

if [[ $# -gt 1 ]]; then
  echo "usage: $0 [TEMPLATE]" >&2
  exit 2
fi
template="$(realpath "${1:-$here/template.yaml}")"
[[ -f $template ]] || { echo "check.sh: no such template: $template" >&2; exit 2; }

# ensure_venv DIR REQUIREMENTS: (re)creates DIR unless it was built from
# exactly this requirements file.
ensure_venv() {
  local dir=$1 req=$2 want have=""
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  [[ -f $dir/.requirements.sha256 ]] && have="$(cat "$dir/.requirements.sha256")"
  if [[ -x $dir/bin/python && $have == "$want" ]]; then
    return 0
  fi
  echo "==> preparing $dir from ${req#"$root"/}"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
  echo "$want" >"$dir/.requirements.sha256"
}

lint_venv="$cache/infra-venv"
sam_venv="$cache/sam-venv"
ensure_venv "$lint_venv" "$here/requirements.txt"
ensure_venv "$sam_venv" "$here/requirements-sam.txt"

passed=0
failed=()
step() {
  local name=$1
  shift
  echo "==> $name"
  if "$@"; then
    echo "    ok: $name"
    passed=$((passed + 1))
  else
    echo "    FAILED: $name (exit $?)"
    failed+=("$name")
  fi
}

# SAM must not look for a profile, credentials or instance metadata: give it
# a region and throwaway keys, and no config files. Nothing here calls AWS.
sam_offline() {
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
    AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=offline-dummy-secret \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0 \
    "$@"
}

# Run from the repo root so samconfig.toml is read (and so must parse).
cd "$root"
step "cfn-lint $(basename "$template")" "$lint_venv/bin/cfn-lint" "$template"
step "sam validate --lint" sam_offline "$sam_venv/bin/sam" validate --lint --template-file "$template"
step "check_iam.py" "$lint_venv/bin/python" "$here/check_iam.py" "$template"

if [[ $# -eq 0 ]]; then
  step "selftest.sh" "$here/selftest.sh"
fi

if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
fi
echo "infra: $passed passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
