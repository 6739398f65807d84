#!/usr/bin/env python3
"""Fail on over-broad IAM statements in a CloudFormation/SAM template.

Usage: check_iam.py TEMPLATE

Walks every policy statement the template defines:
  * AWS::Serverless::Function / StateMachine `Policies` (inline documents,
    SAM policy templates expanded with aws-sam-translator, managed policy
    names/ARNs),
  * AWS::IAM::Role / User / Group `Policies` and `ManagedPolicyArns`,
  * AWS::IAM::Policy / ManagedPolicy `PolicyDocument`,
  * resource policies: AWS::S3::BucketPolicy, AWS::SQS::QueuePolicy,
    AWS::SNS::TopicPolicy,
including both branches of every Fn::If. For each Allow statement it fails on
  * Resource "*", or an ARN whose service or resource part is only "*"
    (arn:aws:s3:::*, arn:${AWS::Partition}:sqs:${AWS::Region}:*:*),
  * Action "*" or "service:*" (and NotAction / NotResource, which grant
    everything not listed),
  * Principal "*" without a Condition in a resource policy,
and on AWS managed policies that grant whole services (AdministratorAccess,
PowerUserAccess, *FullAccess).

Deny statements are not checked: a wide Deny (such as "s3:*" on "*" without
TLS) only takes permissions away.

A statement that needs a wildcard because AWS offers no narrower resource
passes only if its Sid is a key of ALLOWED_WILDCARDS below, and then only for
the actions listed there. Put a YAML comment beside such a statement saying
why; the loader cannot see comments, hence the Sid.

Exit status: 0 when nothing was found, 1 when something was, 2 on usage or
load errors.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

# Sid -> (why a wildcard is unavoidable, actions that may use it).
ALLOWED_WILDCARDS: dict[str, tuple[str, frozenset[str]]] = {
    "WildcardRequiredByAwsVpcNetworkInterfaces": (
        "Lambda creates a VPC function's network interfaces with the function's"
        " role; ec2:CreateNetworkInterface/DescribeNetworkInterfaces/"
        "DeleteNetworkInterface cannot name resources that do not exist yet",
        frozenset(
            {
                "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            }
        ),
    ),
    "WildcardRequiredByAwsXRay": (
        "X-Ray PutTraceSegments/PutTelemetryRecords have no resource type",
        frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"}),
    ),
}

# AWS managed policies allowed by name (each itself reviewed): the VPC one
# carries the EC2 network-interface wildcard explained above.
ALLOWED_MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaVPCAccessExecutionRole",
}
BROAD_MANAGED_POLICY = re.compile(r"(^|/)(AdministratorAccess|PowerUserAccess|IAMFullAccess|[A-Za-z0-9]*FullAccess)$")

STATEMENT_SOURCES = {
    "AWS::IAM::Policy": ("PolicyDocument",),
    "AWS::IAM::ManagedPolicy": ("PolicyDocument",),
    "AWS::S3::BucketPolicy": ("PolicyDocument",),
    "AWS::SQS::QueuePolicy": ("PolicyDocument",),
    "AWS::SNS::TopicPolicy": ("PolicyDocument",),
}
RESOURCE_POLICY_TYPES = {"AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"}
ROLE_LIKE = {"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"}
SAM_WITH_POLICIES = {"AWS::Serverless::Function", "AWS::Serverless::StateMachine"}

PLACEHOLDER = "X"  # what an unknown intrinsic value is taken to be


@dataclass
class Finding:
    logical_id: str
    where: str
    problems: list[str]
    statement: Any


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    statements: int = 0
    allowed: list[str] = field(default_factory=list)


def load(path: str) -> dict:
    # cfn-lint's decoder understands the short intrinsic tags (!Ref, !GetAtt,
    # !Sub, !If ...) that plain YAML loaders reject.
    from cfnlint.decode import decode

    template, matches = decode(path)
    if matches or not isinstance(template, dict):
        for m in matches or []:
            print(f"check_iam: {path}: {m}", file=sys.stderr)
        raise SystemExit(2)
    return template


class Resolver:
    """Turns a (possibly intrinsic) value into the strings it may become."""

    def __init__(self, template: dict):
        self.params = template.get("Parameters") or {}

    def strings(self, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, (int, float)):
            return [str(value)]
        if isinstance(value, list):
            out = []
            for v in value:
                out.extend(self.strings(v))
            return out
        if isinstance(value, dict) and len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                p = self.params.get(arg) if isinstance(arg, str) else None
                if isinstance(p, dict) and isinstance(p.get("Default"), str) and p["Default"] == "*":
                    return ["*"]
                return [PLACEHOLDER]
            if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
                return [s for branch in arg[1:] if not is_novalue(branch) for s in self.strings(branch)]
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
                sep, parts = arg
                if isinstance(parts, list):
                    return [str(sep).join(self.one(p) for p in parts)]
                return [PLACEHOLDER]
        return [PLACEHOLDER]

    def one(self, value: Any) -> str:
        s = self.strings(value)
        return s[0] if len(s) == 1 else PLACEHOLDER

    def sub(self, arg: Any) -> list[str]:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, variables = arg
        else:
            return [PLACEHOLDER]

        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return self.one(variables[name])
            p = self.params.get(name)
            if isinstance(p, dict) and p.get("Default") == "*":
                return "*"
            return PLACEHOLDER

        return [re.sub(r"\$\{([^}]+)\}", repl, text)]


def is_novalue(v: Any) -> bool:
    return v == {"Ref": "AWS::NoValue"}


def branches(value: Any) -> Iterator[Any]:
    """Every concrete value a Fn::If tree can produce (AWS::NoValue dropped)."""
    if isinstance(value, dict) and len(value) == 1 and "Fn::If" in value:
        arg = value["Fn::If"]
        if isinstance(arg, list) and len(arg) == 3:
            for b in arg[1:]:
                yield from branches(b)
            return
    if not is_novalue(value):
        yield value


def as_list(value: Any) -> list:
    if value is None:
        return []
    out = []
    for v in branches(value):
        if isinstance(v, list):
            for item in v:
                out.extend(branches(item))
        else:
            out.append(v)
    return out


def resource_is_wildcard(s: str) -> bool:
    if s.strip() == "*":
        return True
    if s.startswith("arn:"):
        parts = s.split(":", 5)
        if len(parts) < 6:
            return "*" in s
        service, resource = parts[2], parts[5]
        if "*" in service:
            return True
        if re.fullmatch(r"[*/:]*", resource):
            return True
    return False


def action_is_wildcard(s: str) -> bool:
    s = s.strip()
    return s == "*" or bool(re.fullmatch(r"[A-Za-z0-9-]+:\*", s))


def principal_is_public(principal: Any, resolver: Resolver) -> bool:
    if principal is None:
        return False
    if isinstance(principal, str):
        return principal == "*"
    if isinstance(principal, dict) and "AWS" in principal:
        return "*" in [x for v in as_list(principal["AWS"]) for x in resolver.strings(v)]
    return False


def check_statement(stmt: Any, resolver: Resolver, resource_policy: bool) -> tuple[list[str], str | None]:
    """Returns (problems, allow-list Sid that excused them)."""
    if not isinstance(stmt, dict):
        return [f"statement is not a mapping: {stmt!r}"], None
    effect = stmt.get("Effect")
    if effect == "Deny":
        return [], None
    problems: list[str] = []
    actions = [a for v in as_list(stmt.get("Action")) for a in resolver.strings(v)]
    resources = [r for v in as_list(stmt.get("Resource")) for r in resolver.strings(v)]

    wild_resources = [r for r in resources if resource_is_wildcard(r)]
    wild_actions = [a for a in actions if action_is_wildcard(a)]
    if wild_resources:
        problems.append(f"Resource wildcard {wild_resources}")
    if wild_actions:
        problems.append(f"Action wildcard {wild_actions}")
    if "NotAction" in stmt:
        problems.append("Allow with NotAction grants every other action")
    if "NotResource" in stmt:
        problems.append("Allow with NotResource grants every other resource")
    if resource_policy and principal_is_public(stmt.get("Principal"), resolver) and not stmt.get("Condition"):
        problems.append('Allow to Principal "*" without a Condition (public)')

    sid = stmt.get("Sid")
    if problems and isinstance(sid, str) and sid in ALLOWED_WILDCARDS:
        _, permitted = ALLOWED_WILDCARDS[sid]
        only_resource_wildcard = problems == [f"Resource wildcard {wild_resources}"]
        if only_resource_wildcard and actions and all(a in permitted for a in actions):
            return [], sid
        problems.append(f"Sid {sid} is allow-listed only for {sorted(permitted)}")
    return problems, None


def statements_of(document: Any) -> Iterator[tuple[str, Any]]:
    for doc in branches(document):
        if not isinstance(doc, dict):
            continue
        for i, stmt in enumerate(as_list(doc.get("Statement"))):
            yield f"Statement[{i}]", stmt


def expand_policy_template(name: str, params: Any) -> Any:
    from samtranslator.policy_template_processor.processor import PolicyTemplatesProcessor

    processor = PolicyTemplatesProcessor(PolicyTemplatesProcessor.get_default_policy_templates_json())
    if not processor.has(name):
        return None
    return processor.convert(name, params if isinstance(params, dict) else {})


def managed_policy_problem(value: Any, resolver: Resolver) -> str | None:
    for s in resolver.strings(value):
        name = s.rsplit("/", 1)[-1]
        if name in ALLOWED_MANAGED_POLICIES:
            continue
        if BROAD_MANAGED_POLICY.search(s):
            return f"managed policy {s} grants whole services"
    return None


def walk(template: dict) -> Report:
    resolver = Resolver(template)
    report = Report()

    def consider(logical_id: str, where: str, stmt: Any, resource_policy: bool = False) -> None:
        report.statements += 1
        problems, excused_by = check_statement(stmt, resolver, resource_policy)
        if excused_by:
            report.allowed.append(f"{logical_id} {where} (Sid {excused_by}: {ALLOWED_WILDCARDS[excused_by][0]})")
        if problems:
            report.findings.append(Finding(logical_id, where, problems, stmt))

    for logical_id, res in (template.get("Resources") or {}).items():
        if not isinstance(res, dict):
            continue
        rtype = res.get("Type")
        props = res.get("Properties") or {}

        if rtype in STATEMENT_SOURCES:
            for key in STATEMENT_SOURCES[rtype]:
                for where, stmt in statements_of(props.get(key)):
                    consider(logical_id, f"{key}.{where}", stmt, rtype in RESOURCE_POLICY_TYPES)
            for i, arn in enumerate(as_list(props.get("ManagedPolicyArns"))):
                problem = managed_policy_problem(arn, resolver)
                if problem:
                    report.findings.append(Finding(logical_id, f"ManagedPolicyArns[{i}]", [problem], arn))

        elif rtype in ROLE_LIKE:
            for i, pol in enumerate(as_list(props.get("Policies"))):
                name = pol.get("PolicyName", i) if isinstance(pol, dict) else i
                doc = pol.get("PolicyDocument") if isinstance(pol, dict) else None
                for where, stmt in statements_of(doc):
                    consider(logical_id, f"Policies[{name}].{where}", stmt)
            for i, arn in enumerate(as_list(props.get("ManagedPolicyArns"))):
                problem = managed_policy_problem(arn, resolver)
                if problem:
                    report.findings.append(Finding(logical_id, f"ManagedPolicyArns[{i}]", [problem], arn))

        elif rtype in SAM_WITH_POLICIES:
            for i, pol in enumerate(as_list(props.get("Policies"))):
                where = f"Policies[{i}]"
                if isinstance(pol, str) or (isinstance(pol, dict) and ("Ref" in pol or "Fn::Sub" in pol)):
                    problem = managed_policy_problem(pol, resolver)
                    if problem:
                        report.findings.append(Finding(logical_id, where, [problem], pol))
                elif isinstance(pol, dict) and "Statement" in pol:
                    for w, stmt in statements_of(pol):
                        consider(logical_id, f"{where}.{w}", stmt)
                elif isinstance(pol, dict) and len(pol) == 1:
                    (tname, tparams), = pol.items()
                    doc = expand_policy_template(tname, tparams)
                    if doc is None:
                        report.findings.append(Finding(logical_id, where, [f"unknown SAM policy template {tname}"], pol))
                        continue
                    for w, stmt in statements_of(doc):
                        consider(logical_id, f"{where}<{tname}>.{w}", stmt)
                else:
                    report.findings.append(Finding(logical_id, where, ["policy entry not understood"], pol))
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    path = argv[1]
    report = walk(load(path))
    for finding in report.findings:
        print(f"FAIL {finding.logical_id} {finding.where}: {'; '.join(finding.problems)}")
        print("  " + json.dumps(finding.statement, default=str, indent=2).replace("\n", "\n  "))
    for line in report.allowed:
        print(f"allowed wildcard: {line}")
    verdict = "FAILED" if report.findings else "ok"
    print(
        f"check_iam: {path}: {report.statements} statement(s) checked,"
        f" {len(report.findings)} problem(s), {len(report.allowed)} allow-listed wildcard(s): {verdict}"
    )
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
