#!/usr/bin/env bash
# Proves infra/check.sh catches what it is meant to catch: it must pass on
# the real template and fail on each deliberately broken copy.
#   (a) a !GetAtt to a resource that does not exist  -> cfn-lint / sam validate
#   (b) an IAM statement with Resource "*"            -> check_iam.py
#   (c) a checkov skip that names the wrong check     -> checkov
#   (d) a DbMaxConnections default below the pools    -> check_values.py
#   (e) PgSslMode defaulting to require               -> check_values.py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
real="$here/template.yaml"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
ok() { echo "    PASS: $*"; passed=$((passed + 1)); }
bad() { echo "    FAIL: $*"; failed=$((failed + 1)); }

# break NAME FROM TO: copies the template to $tmp/NAME.yaml with the one
# line equal to FROM (leading spaces aside) replaced by TO, keeping its
# indentation. Refuses to go on if FROM is not there exactly once, so a
# change to the template cannot quietly turn a test into a no-op.
break_copy() {
  local name=$1 from=$2 to=$3 out="$tmp/$1.yaml" count
  count="$(grep -cxE "[[:space:]]*$(printf '%s' "$from" | sed 's/[][\.*^$/]/\\&/g')" "$real" || true)"
  if [[ $count != 1 ]]; then
    echo "selftest: expected exactly one line '$from' in $real, found $count" >&2
    exit 2
  fi
  FROM="$from" TO="$to" awk '{ s = $0; sub(/^[ \t]+/, "", s); if (s == ENVIRON["FROM"]) { match($0, /^[ \t]*/); print substr($0, 1, RLENGTH) ENVIRON["TO"] } else print }' "$real" >"$out"
  if cmp -s "$real" "$out"; then
    echo "selftest: copy $name is unchanged" >&2
    exit 2
  fi
  echo "$out"
}

# expect_fail NAME PATTERN FILE: check.sh must fail, naming PATTERN.
expect_fail() {
  local name=$1 pattern=$2 file=$3 log="$tmp/$1.log" rc=0
  echo "==> selftest: $name"
  "$here/check.sh" "$file" >"$log" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    bad "$name: check.sh passed a broken template"
    sed 's/^/      /' "$log"
  elif ! grep -qE "$pattern" "$log"; then
    bad "$name: check.sh failed (exit $rc) but not for the expected reason /$pattern/"
    sed 's/^/      /' "$log"
  else
    ok "$name: check.sh failed (exit $rc) as expected:"
    grep -E "$pattern|FAILED|^infra:" "$log" | sed 's/^/      /'
  fi
}

echo "==> selftest: real template"
if "$here/check.sh" "$real" >"$tmp/real.log" 2>&1; then
  ok "real template passes"
else
  bad "real template does not pass"
  sed 's/^/      /' "$tmp/real.log"
fi

copy_a="$(break_copy missing-getatt \
  "Resource: !GetAtt EnrichLogGroup.Arn" \
  "Resource: !GetAtt NoSuchLogGroup.Arn")"
expect_fail "getatt-to-missing-resource" "NoSuchLogGroup" "$copy_a"

copy_b="$(break_copy wildcard-resource \
  "Resource: !GetAtt IngestLogGroup.Arn" \
  'Resource: "*"')"
expect_fail "resource-wildcard" "FAIL IngestRole .*Resource wildcard" "$copy_b"

copy_c="$(break_copy checkov-skip-removed \
  "- id: CKV_AWS_161" \
  "- id: CKV_AWS_0")"
expect_fail "checkov-failed-check" "CKV_AWS_161" "$copy_c"

copy_d="$(break_copy connection-bound \
  "Default: 80" \
  "Default: 6")"
expect_fail "connection-bound" "FAIL template defaults: DbPoolSize 2 x \\(1 \\+ EnrichMaximumConcurrency 2 \\+ ArchiveMaximumConcurrency 2 \\+ 1\\) = 12 >= DbMaxConnections 6" "$copy_d"

copy_e="$(break_copy unverified-tls \
  "Default: verify-full" \
  "Default: require")"
expect_fail "unverified-tls-default" "FAIL PgSslMode default is 'require'" "$copy_e"

echo "selftest: $passed passed, $failed failed"
((failed == 0))
