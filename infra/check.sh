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
#   4. checkov                        (pinned in infra/requirements-checkov.txt;
#                                      fails on any failed check; a check that
#                                      does not apply is skipped in the
#                                      template with a one-line reason)
#   5. infra/check_values.py          (the values the code relies on, and
#                                      DbPoolSize x (1 + EnrichMaximumConcurrency
#                                      + ArchiveMaximumConcurrency + 1)
#                                      < DbMaxConnections for the defaults and
#                                      samconfig.toml)
#   6. build metadata                 (every rust-cargolambda function names
#                                      its binary where SAM reads it)
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
checkov_venv="$cache/checkov-venv"
ensure_venv "$lint_venv" "$here/requirements.txt"
ensure_venv "$sam_venv" "$here/requirements-sam.txt"
ensure_venv "$checkov_venv" "$here/requirements-checkov.txt"

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

# checkov exits non-zero on a failed check, but also reports 0 failed when it
# could not parse the file at all: read its JSON summary as well.
# --skip-download: no Prisma Cloud look-ups (check metadata, guidelines).
checkov_run() {
  local out rc=0
  out="$(mktemp -d)"
  "$checkov_venv/bin/checkov" -f "$1" --framework cloudformation --skip-download \
    --compact --quiet -o cli -o json --output-file-path "$out" >/dev/null 2>"$out/stderr" || rc=$?
  cat "$out/results_cli.txt" 2>/dev/null || cat "$out/stderr"
  "$lint_venv/bin/python" - "$out/results_json.json" "$rc" <<'PY'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    data = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit(f"checkov wrote no readable results ({e}), exit {rc}")
runs = data if isinstance(data, list) else [data]
s = {k: sum(r.get("summary", {}).get(k, 0) for r in runs) for k in ("passed", "failed", "skipped", "parsing_errors")}
print(f"checkov: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, {s['parsing_errors']} parsing errors")
sys.exit(0 if rc == 0 and s["failed"] == 0 and s["parsing_errors"] == 0 and s["passed"] > 0 else 1)
PY
  local verdict=$?
  rm -rf "$out"
  return "$verdict"
}
step "checkov" checkov_run "$template"
step "check_values.py" "$lint_venv/bin/python" "$here/check_values.py" "$template" "$root/samconfig.toml"

# SAM reads the binary name from Metadata.BuildProperties.Binary only; a
# Binary key directly under Metadata is ignored, and `sam build` then builds
# the whole workspace and fails to pick the function's bootstrap.
build_metadata() {
  "$lint_venv/bin/python" - "$1" <<'PY'
import sys
from cfnlint.decode import decode
tpl, matches = decode(sys.argv[1])
if matches:
    sys.exit(f"cannot load {sys.argv[1]}")
bad = 0
for lid, res in (tpl.get("Resources") or {}).items():
    md = res.get("Metadata") or {}
    if res.get("Type") != "AWS::Serverless::Function" or md.get("BuildMethod") != "rust-cargolambda":
        continue
    binary = (md.get("BuildProperties") or {}).get("Binary")
    if not isinstance(binary, str) or not binary:
        print(f"{lid}: rust-cargolambda without Metadata.BuildProperties.Binary")
        bad += 1
    else:
        print(f"{lid}: cargo lambda build --bin {binary}")
sys.exit(1 if bad else 0)
PY
}
step "build metadata" build_metadata "$template"

if [[ $# -eq 0 ]]; then
  step "selftest.sh" "$here/selftest.sh"
fi

if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
fi
echo "infra: $passed passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
