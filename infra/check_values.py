#!/usr/bin/env python3
"""Check the template values the code relies on, and the database connection bound.

Usage: check_values.py TEMPLATE [SAMCONFIG]

Fails (exit 1) unless
  * PgSslMode defaults to verify-full (the only mode that authenticates the server),
  * IngestFunction Timeout is 300 s, EnrichFunction Timeout 120 s and ArchiveFunction Timeout
    900 s, the values the code's deadlines are written for,
  * EnrichQueue VisibilityTimeout is at least 6x the enrich timeout and at least the 300 s
    lease enrich takes on a push row,
  * HoursQueue VisibilityTimeout is at least 6x the archive timeout and at least the 900 s
    lease an import takes on its hour,
  * EnrichQueue, EnrichDeadLetterQueue, HoursQueue and HoursDeadLetterQueue keep messages for
    14 days (the maximum),
  * IngestFunction has ReservedConcurrentExecutions 1 and EnrichFunction's reserved
    concurrency is EnrichMaximumConcurrency (what the bound below assumes),
  * both functions get MIGRATE_ON_START and DB_POOL_SIZE from the MigrateOnStart and
    DbPoolSize parameters,
  * DbPoolSize x (1 + EnrichMaximumConcurrency + ArchiveMaximumConcurrency + 1) <
    DbMaxConnections (one ingest, the enrich and archive queues' pollers, one hourly archive
    tick), for the template's defaults and for every parameter_overrides in SAMCONFIG (default: samconfig.toml next to
    the template's directory, if present), each merged over the defaults.

CloudFormation Rules cannot multiply or compare numbers, so the bound cannot be enforced at
deploy time; values given only on the `sam deploy --parameter-overrides` command line are not
checked here either.

Exit status: 0 when all hold, 1 when one does not, 2 on usage or load errors.
"""

from __future__ import annotations

import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ROW_LEASE_SECS = 300
INGEST_TIMEOUT = 300
ENRICH_TIMEOUT = 120
ARCHIVE_TIMEOUT = 900
HOUR_LEASE_SECS = 900
MAX_RETENTION = 1_209_600  # 14 days


def ref(value: Any) -> str | None:
    """The parameter name of a {"Ref": name}, else None."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return value["Ref"]
    return None


def overrides(samconfig: Path) -> list[tuple[str, dict[str, str]]]:
    """(where, {parameter: value}) for every parameter_overrides in a samconfig.toml."""
    found = []
    data = tomllib.loads(samconfig.read_text())
    for env, commands in data.items():
        if not isinstance(commands, dict):
            continue
        for command, section in commands.items():
            params = section.get("parameters") if isinstance(section, dict) else None
            if not isinstance(params, dict) or "parameter_overrides" not in params:
                continue
            raw = params["parameter_overrides"]
            items = raw if isinstance(raw, list) else shlex.split(raw)
            values = {}
            for item in items:
                key, sep, value = item.partition("=")
                if sep:
                    values[key] = value
            found.append((f"{samconfig.name} [{env}.{command}.parameters]", values))
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    template = Path(argv[1])
    samconfig = Path(argv[2]) if len(argv) == 3 else template.parent.parent / "samconfig.toml"
    tpl, matches = decode(str(template))
    if matches or not isinstance(tpl, dict):
        print(f"cannot load {template}", file=sys.stderr)
        return 2

    problems: list[str] = []
    params = tpl.get("Parameters") or {}
    resources = tpl.get("Resources") or {}
    glob_env = (
        ((tpl.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    ).get("Variables") or {}

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what} is {got!r}, expected {want!r}")

    def prop(resource: str, key: str) -> Any:
        return ((resources.get(resource) or {}).get("Properties") or {}).get(key)

    expect("PgSslMode default", (params.get("PgSslMode") or {}).get("Default"), "verify-full")
    expect("IngestFunction Timeout", prop("IngestFunction", "Timeout"), INGEST_TIMEOUT)
    expect("EnrichFunction Timeout", prop("EnrichFunction", "Timeout"), ENRICH_TIMEOUT)
    enrich_timeout = prop("EnrichFunction", "Timeout")
    visibility = prop("EnrichQueue", "VisibilityTimeout")
    if not (
        isinstance(visibility, int)
        and isinstance(enrich_timeout, int)
        and visibility >= 6 * enrich_timeout
        and visibility >= ROW_LEASE_SECS
    ):
        problems.append(
            f"EnrichQueue VisibilityTimeout {visibility!r} must be >= 6 x the enrich timeout"
            f" ({enrich_timeout!r}) and >= the {ROW_LEASE_SECS} s row lease"
        )
    expect("ArchiveFunction Timeout", prop("ArchiveFunction", "Timeout"), ARCHIVE_TIMEOUT)
    archive_timeout = prop("ArchiveFunction", "Timeout")
    hours_visibility = prop("HoursQueue", "VisibilityTimeout")
    if not (
        isinstance(hours_visibility, int)
        and isinstance(archive_timeout, int)
        and hours_visibility >= 6 * archive_timeout
        and hours_visibility >= HOUR_LEASE_SECS
    ):
        problems.append(
            f"HoursQueue VisibilityTimeout {hours_visibility!r} must be >= 6 x the archive timeout"
            f" ({archive_timeout!r}) and >= the {HOUR_LEASE_SECS} s hour lease"
        )
    for queue in ("EnrichQueue", "EnrichDeadLetterQueue", "HoursQueue", "HoursDeadLetterQueue"):
        expect(f"{queue} MessageRetentionPeriod", prop(queue, "MessageRetentionPeriod"), MAX_RETENTION)
    expect(
        "IngestFunction ReservedConcurrentExecutions",
        prop("IngestFunction", "ReservedConcurrentExecutions"),
        1,
    )
    expect(
        "EnrichFunction ReservedConcurrentExecutions",
        ref(prop("EnrichFunction", "ReservedConcurrentExecutions")),
        "EnrichMaximumConcurrency",
    )
    expect("Globals MIGRATE_ON_START", ref(glob_env.get("MIGRATE_ON_START")), "MigrateOnStart")
    expect("Globals DB_POOL_SIZE", ref(glob_env.get("DB_POOL_SIZE")), "DbPoolSize")

    # The connection bound: at most one ingest, EnrichMaximumConcurrency enrich and
    # ArchiveMaximumConcurrency + 1 archive instances (the queue's and the hourly tick), each
    # with a pool of DbPoolSize.
    names = ("DbPoolSize", "EnrichMaximumConcurrency", "ArchiveMaximumConcurrency", "DbMaxConnections")
    defaults = {n: (params.get(n) or {}).get("Default") for n in names}
    cases = [("template defaults", {})]
    if samconfig.is_file():
        cases += overrides(samconfig)
    for where, given in cases:
        values = {**defaults, **{k: v for k, v in given.items() if k in names}}
        try:
            pool, enrich, archive, limit = (int(values[n]) for n in names)
        except (TypeError, ValueError):
            problems.append(f"{where}: {values} are not all numbers")
            continue
        used = pool * (1 + enrich + archive + 1)
        line = (
            f"{where}: DbPoolSize {pool} x (1 + EnrichMaximumConcurrency {enrich}"
            f" + ArchiveMaximumConcurrency {archive} + 1) = {used}"
            f" {'<' if used < limit else '>='} DbMaxConnections {limit}"
        )
        print(line)
        if used >= limit:
            problems.append(line)

    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("template values: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
