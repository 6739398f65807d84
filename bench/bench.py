#!/usr/bin/env python3
"""ghevents benchmarks (run them through bench/run.sh, which builds the release binaries first).

capture    `ghevents run` against github-sim replaying both 2015-01-01 hours, one run per feed of
           --feeds (events/s, seconds, X-Poll-Interval, anonymous budget or a token): new events
           stored per /events request, the share of the feed captured against its ceiling
           min(1, budget x 100 / events released), duplicates, violations, requests by status.
import     `ghevents import` of a generated file of >= 200,000 events into a fresh database,
           against `psql \\copy` of the same lines into a bare jsonb table, in the same run.
footprint  peak RSS and wall time of one `ghevents ingest --once` storing 300 events.
archive    (only with --only archive: minutes) a generated GH Archive hour of >= 200,000 events
           and >= 500 MB of NDJSON, gzipped and served over local HTTP under its archive name:
           `ghevents archive --hour` from there, against `ghevents import` of the same file, each
           into a fresh database, in the same run: the time ratio, peak RSS, and what one 900 s
           Lambda invocation holds at the measured rate.

Prints a table and writes target/bench/results.json. Standard library only; needs psql and
/usr/bin/time (GNU time). Every figure printed is measured in this run.
"""

import argparse
import functools
import http.server
import json
import os
import platform
import re
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
DEFAULT_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
# Busy feeds against 60 requests a minute and X-Poll-Interval 1 (50 events/s: the budget
# could read it all; 120 and 300: it cannot), and one against a token's budget with
# X-Poll-Interval 60 (the interval binds).
DEFAULT_FEEDS = "50:60:1,120:60:1,300:45:1,3:125:60:token"
COPY_OPTIONS = "with (format csv, quote e'\\x01', delimiter e'\\x02')"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Postgres

def with_dbname(url, name):
    head, sep, query = url.partition("?")
    scheme_end = head.index("://") + 3
    slash = head.find("/", scheme_end)
    base = head if slash < 0 else head[:slash]
    return f"{base}/{name}" + (sep + query if sep else "")


def psql(url, *commands):
    args = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url]
    for c in commands:
        args += ["-c", c]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({' ; '.join(commands)[:200]}): {out.stderr.strip()}")
    return out.stdout


def fresh_db(admin, name):
    psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return with_dbname(admin, name)


def drop_db(admin, name):
    psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---------------------------------------------------------------- processes

def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Sim:
    """github-sim on a free port; stopped with Ctrl-C (SIGINT)."""

    def __init__(self, binary, files, args, logfile):
        cmd = [str(binary)]
        for f in files:
            cmd += ["--file", str(f)]
        cmd += ["--port", "0", *map(str, args)]
        self.log = open(logfile, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=clean_env(RUST_LOG="github_sim=info"))
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=120):
            self.stop()
            raise RuntimeError(f"github-sim printed no URL within 120 s (log: {logfile})")
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"github-sim did not start (log: {logfile})")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def time_v(cmd, env):
    """Runs cmd under GNU time -v; returns (stdout, stderr without time's report, report dict, wall s)."""
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    report, rest = {}, []
    for line in out.stderr.splitlines():
        m = re.match(r"^\t([^:]+(?:\([^)]*\))?[^:]*): (.*)$", line)
        if m:
            report[m.group(1).strip()] = m.group(2).strip()
        else:
            rest.append(line)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} exited {out.returncode}: {' '.join(rest)[-600:]}")
    return out.stdout, "\n".join(rest), report, wall


def max_rss_kb(report):
    return int(report["Maximum resident set size (kbytes)"])


# ---------------------------------------------------------------- capture

CYCLE = re.compile(r"^(\w+): requests=(\d+) not_modified=(\d+) pages=(\d+) fetched=(\d+) new=(\d+) duplicates=(\d+)")


def cycles_of(stdout_text):
    out = []
    for line in stdout_text.splitlines():
        m = CYCLE.match(line)
        if m:
            out.append({"outcome": m.group(1), "requests": int(m.group(2)), "pages": int(m.group(4)),
                        "fetched": int(m.group(5)), "new": int(m.group(6)), "duplicates": int(m.group(7))})
    return out


def boundary_gaps(cycles, gaps_ms):
    """Splits the simulator's gaps between /events arrivals into gaps between cycles (the wait
    X-Poll-Interval governs) and gaps between the pages of one cycle. None if the cycle lines
    do not account for every request (a failed cycle prints no count)."""
    counts = [c["requests"] for c in cycles if c["requests"] > 0]
    if sum(counts) != len(gaps_ms) + 1:
        return None
    between, within, i = [], [], 0
    for n, count in enumerate(counts):
        if n > 0:
            between.append(gaps_ms[i])
            i += 1
        within += gaps_ms[i:i + count - 1]
        i += count - 1
    return between, within


def parse_feed(spec):
    """`RATE:SECS[:POLL_INTERVAL[:token]]` → a feed to capture."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4 or (len(parts) == 4 and parts[3] != "token"):
        raise argparse.ArgumentTypeError(f"feed {spec!r}: RATE:SECS[:POLL_INTERVAL[:token]]")
    rate, secs = float(parts[0]), int(parts[1])
    poll = int(parts[2]) if len(parts) > 2 else None
    token = len(parts) == 4
    rate_s = f"{rate:g}"
    return {"name": f"{rate_s}{'-token' if token else ''}", "rate": rate, "secs": secs, "poll_interval": poll, "token": token}


def capture(a, feed):
    name, rate, secs, token = feed["name"], feed["rate"], feed["secs"], feed["token"]
    poll_interval = feed["poll_interval"] or a.poll_interval
    # A token has GitHub's hour-long window of 5000; anonymous, the compressed --window/--limit.
    window, limit = (3600, a.token_limit) if token else (a.window, a.limit)
    if not token and secs < window:
        # A run shorter than the window gets the same budget per second in a window as long
        # as the run, so that the budget it could spend is the one the ceiling counts.
        window, limit = secs, max(1, round(limit * secs / window))
    files = [a.data_dir / "gharchive" / f"2015-01-01-{h}.json.gz" for h in (0, 1)]
    db = f"ghevents_bench_{re.sub(r'[^a-z0-9]', '_', name)}"
    url = fresh_db(a.admin, db)
    env = clean_env(DATABASE_URL=url, RUST_LOG="info,refinery_core=warn,tokio_postgres=warn")
    if token:
        env["GITHUB_TOKEN"] = "ghp_benchmarktokenbenchmarktoken0000"
    subprocess.run([a.ghevents, "migrate"], check=True, capture_output=True, env=env)
    sim = Sim(a.sim, files, ["--initial", a.initial, "--rate", rate, "--shuffle-block", 8,
                             "--window-secs", window, "--limit-anon", limit, "--limit-token", limit,
                             "--poll-interval", poll_interval],
              a.out / f"capture-{name}-sim.log")
    try:
        env["GITHUB_API_URL"] = sim.url
        out_path, err_path = a.out / f"capture-{name}-ghevents.out", a.out / f"capture-{name}-ghevents.log"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            log(f"capture/{name}: ghevents run for {secs} s against {sim.url} ({rate} events/s)")
            # Ingest alone: enrichment would draw on the same budget.
            p = subprocess.Popen([a.ghevents, "run", "--no-enrich"], stdout=out, stderr=err, env=env)
            time.sleep(secs)
            p.send_signal(signal.SIGINT)
            try:
                code = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                raise RuntimeError("ghevents run did not stop within 60 s of Ctrl-C")
        if code != 0:
            raise RuntimeError(f"ghevents run exited {code} (see {err_path})")
        stats = sim.get("/_sim/stats")
        rate_limit = sim.get("/rate_limit")["resources"]["core"]
    finally:
        sim.stop()
    status = json.loads(subprocess.run([a.ghevents, "status", "--json"], check=True, capture_output=True, text=True, env=env).stdout)
    rows, distinct, pushes = map(int, psql(url, "SELECT count(*), count(DISTINCT event_id), (SELECT count(*) FROM push_events) FROM github_events").split("|"))
    stored = {int(x) for x in psql(url, "SELECT event_id FROM github_events").split()}
    drop_db(a.admin, db)

    client = next((v for k, v in stats["clients"].items() if (k != "anonymous") == token), {})
    by_status = {int(k): v for k, v in client.get("by_kind", {}).get("events", {}).items()}
    requests = sum(by_status.values())
    served = {int(k): v for k, v in stats["served_ids"].items()}
    released = {int(x) for x in stats["released_ids"]}
    cycles = cycles_of(out_path.read_text())
    split = boundary_gaps(cycles, client.get("poll_gaps_ms", []))
    charged_non_304 = requests - by_status.get(304, 0)
    # What the budget can read at best: a full page of new events per request, over every
    # window the run touched (a window opens at the first request).
    budget = limit * -(-secs // window)
    ceiling = min(1.0, budget * 100 / stats["released"]) if stats["released"] else None
    coverage = rows / stats["released"] if stats["released"] else None
    r = {
        "feed_events_per_s": rate,
        "run_s": secs,
        "poll_interval_s": poll_interval,
        "identity": "token" if token else "anonymous",
        "window_s": window,
        "budget": budget,
        "ceiling": round(ceiling, 4) if ceiling is not None else None,
        "share_of_ceiling": round(coverage / ceiling, 4) if coverage is not None and ceiling else None,
        "released": stats["released"],
        "events_requests": requests,
        "requests_by_status": by_status,
        "other_requests": {k: v for k, v in client.get("by_kind", {}).items() if k != "events"},
        "stored": rows,
        "stored_push_events": pushes,
        "new_per_request": round(rows / requests, 2) if requests else None,
        "duplicates_stored": rows - distinct,
        "served_not_stored": len(set(served) - stored),
        "stored_not_released": len(stored - released),
        "served_more_than_once": sum(1 for v in served.values() if v > 1),
        "events_fetched": sum(served.values()),
        "coverage": round(coverage, 4) if coverage is not None else None,
        "violations": client.get("violations", 0),
        "responses_304": by_status.get(304, 0),
        "sim_budget_used_in_window": rate_limit["used"],
        "sim_budget_limit": rate_limit["limit"],
        "cost_of_304s": rate_limit["used"] - charged_non_304 if window > secs + 5 else None,
        "ghevents_budget_used": status["budget"]["used"],
        "cycles": len(cycles),
        "cycles_by_outcome": {o: sum(1 for c in cycles if c["outcome"] == o) for o in sorted({c["outcome"] for c in cycles})},
        "cycles_by_pages": {p: sum(1 for c in cycles if c["pages"] == p) for p in sorted({c["pages"] for c in cycles})},
        "min_poll_gap_ms": client.get("min_poll_gap_ms"),
        "min_gap_between_cycles_ms": min(split[0]) if split and split[0] else None,
        "mean_gap_within_cycle_ms": round(statistics.mean(split[1]), 1) if split and split[1] else None,
        "max_gap_within_cycle_ms": max(split[1]) if split and split[1] else None,
        "duplicates_seen_per_cycle": round(sum(c["duplicates"] for c in cycles) / len(cycles), 2) if cycles else None,
    }
    return r


# ---------------------------------------------------------------- import

def ensure_import_file(a):
    path = a.out / "import.ndjson"
    manifest_path = Path(str(path) + ".manifest.json")
    if path.exists() and manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if m["events"] >= a.import_events and m["bytes"] == path.stat().st_size:
            return path, m
    log(f"import: generating {path} (>= {a.import_events} events)")
    env = dict(os.environ, GHEVENTS_DATA_DIR=str(a.data_dir))
    subprocess.run([sys.executable, REPO / "bench" / "gen_import.py", "--out", path, "--min-events", str(a.import_events)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return path, json.loads(manifest_path.read_text())


def import_bench(a):
    path, manifest = ensure_import_file(a)
    with open(path, "rb") as f:  # both contenders read it from the page cache
        while f.read(1 << 24):
            pass
    runs = []
    for rep in range(1, a.import_reps + 1):
        copy_url = fresh_db(a.admin, "ghevents_bench_copy")
        psql(copy_url, "CREATE TABLE raw_events (doc jsonb)")
        psql(a.admin, "CHECKPOINT")
        log(f"import {rep}/{a.import_reps}: psql \\copy")
        t0 = time.monotonic()
        psql(copy_url, f"\\copy raw_events(doc) from '{path}' {COPY_OPTIONS}")
        copy_s = time.monotonic() - t0
        copied = int(psql(copy_url, "SELECT count(*) FROM raw_events"))
        drop_db(a.admin, "ghevents_bench_copy")

        imp_url = fresh_db(a.admin, "ghevents_bench_import")
        env = clean_env(DATABASE_URL=imp_url)
        subprocess.run([a.ghevents, "migrate"], check=True, capture_output=True, env=env)
        psql(a.admin, "CHECKPOINT")
        log(f"import {rep}/{a.import_reps}: ghevents import")
        out, _, report, import_s = time_v([a.ghevents, "import", path], env)
        events, pushes = map(int, psql(imp_url, "SELECT (SELECT count(*) FROM github_events), (SELECT count(*) FROM push_events)").split("|"))
        drop_db(a.admin, "ghevents_bench_import")
        if copied != manifest["events"] or events != manifest["events"] or pushes != manifest["push_events"]:
            raise RuntimeError(f"row counts: copy {copied}, import {events} events / {pushes} pushes, file {manifest}")
        runs.append({"copy_s": round(copy_s, 2), "import_s": round(import_s, 2),
                     "ratio": round(import_s / copy_s, 3), "import_max_rss_kb": max_rss_kb(report),
                     "import_summary": out.strip()})
    copy_s = statistics.median(r["copy_s"] for r in runs)
    import_s = statistics.median(r["import_s"] for r in runs)
    return {
        "file": str(path), "events": manifest["events"], "push_events": manifest["push_events"],
        "bytes": manifest["bytes"], "runs": runs,
        "copy_s_median": round(copy_s, 2), "import_s_median": round(import_s, 2),
        "copy_events_per_s": round(manifest["events"] / copy_s),
        "import_events_per_s": round(manifest["events"] / import_s),
        "ratio_of_medians": round(import_s / copy_s, 3),
    }


# ---------------------------------------------------------------- footprint

def footprint(a):
    files = [a.data_dir / "gharchive" / "2015-01-01-0.json.gz"]
    runs = []
    for rep in range(1, a.footprint_reps + 1):
        url = fresh_db(a.admin, "ghevents_bench_footprint")
        env = clean_env(DATABASE_URL=url)
        subprocess.run([a.ghevents, "migrate"], check=True, capture_output=True, env=env)
        sim = Sim(a.sim, files, ["--manual", "--initial", 300, "--poll-interval", 1], a.out / "footprint-sim.log")
        try:
            env["GITHUB_API_URL"] = sim.url
            out, _, report, wall = time_v([a.ghevents, "ingest", "--once"], env)
        finally:
            sim.stop()
        stored = int(psql(url, "SELECT count(*) FROM github_events"))
        drop_db(a.admin, "ghevents_bench_footprint")
        if stored != 300 or "new=300" not in out:
            raise RuntimeError(f"ingest --once stored {stored} events: {out}")
        runs.append({"max_rss_kb": max_rss_kb(report), "wall_s": round(wall, 3), "cycle": out.strip().split(" rate_remaining")[0]})
    return {
        "runs": runs,
        "max_rss_kb_median": statistics.median(r["max_rss_kb"] for r in runs),
        "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3),
    }


# ---------------------------------------------------------------- archive

ARCHIVE_HOUR = "2015-01-01T15"
ARCHIVE_FILE = "2015-01-01-15.json.gz"  # GH Archive's name for that hour
LAMBDA_TIMEOUT_S = 900
# What an invocation keeps back: the start margin before an hour, the archiver's margin before
# the deadline, a cold start's connect and migrations.
LAMBDA_RESERVE_S = 90
HOUR_GZIP_MB = 250


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class StaticServer:
    """The directory over HTTP on a free port (a thread); .gz served as application/gzip."""

    def __init__(self, directory):
        handler = functools.partial(Quiet, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def ensure_archive_file(a):
    path = a.out / "archive" / ARCHIVE_FILE
    manifest_path = Path(str(path) + ".manifest.json")
    if path.exists() and manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if m["events"] >= a.archive_events and m["bytes"] >= a.archive_bytes and m.get("file_bytes") == path.stat().st_size:
            return path, m
    log(f"archive: generating {path} (>= {a.archive_events} events, >= {a.archive_bytes / 1e6:.0f} MB NDJSON, gzipped)")
    env = dict(os.environ, GHEVENTS_DATA_DIR=str(a.data_dir))
    subprocess.run([sys.executable, REPO / "bench" / "gen_import.py", "--out", path, "--gzip",
                    "--min-events", str(a.archive_events), "--min-bytes", str(a.archive_bytes)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return path, json.loads(manifest_path.read_text())


def archive_bench(a):
    path, manifest = ensure_archive_file(a)
    with open(path, "rb") as f:  # both contenders read it from the page cache
        while f.read(1 << 24):
            pass
    server = StaticServer(path.parent)
    runs = []
    try:
        for rep in range(1, a.archive_reps + 1):
            arc_url = fresh_db(a.admin, "ghevents_bench_archive")
            env = clean_env(DATABASE_URL=arc_url, GHARCHIVE_URL=server.url)
            subprocess.run([a.ghevents, "migrate"], check=True, capture_output=True, env=env)
            psql(a.admin, "CHECKPOINT")
            log(f"archive {rep}/{a.archive_reps}: ghevents archive --hour {ARCHIVE_HOUR} from {server.url}")
            out, _, report, archive_s = time_v([a.ghevents, "archive", "--hour", ARCHIVE_HOUR], env)
            events, pushes, status = psql(
                arc_url,
                "SELECT (SELECT count(*) FROM github_events), (SELECT count(*) FROM push_events),"
                " (SELECT status FROM archive_hours WHERE hour = '2015-01-01 15:00+00')").strip().split("|")
            drop_db(a.admin, "ghevents_bench_archive")
            if int(events) != manifest["events"] or int(pushes) != manifest["push_events"] or status != "done":
                raise RuntimeError(f"archive stored {events} events / {pushes} pushes, hour {status}; file {manifest}: {out}")
            archive_rss = max_rss_kb(report)

            imp_url = fresh_db(a.admin, "ghevents_bench_import")
            env = clean_env(DATABASE_URL=imp_url)
            subprocess.run([a.ghevents, "migrate"], check=True, capture_output=True, env=env)
            psql(a.admin, "CHECKPOINT")
            log(f"archive {rep}/{a.archive_reps}: ghevents import {path.name}")
            _, _, ireport, import_s = time_v([a.ghevents, "import", path], env)
            events = int(psql(imp_url, "SELECT count(*) FROM github_events"))
            drop_db(a.admin, "ghevents_bench_import")
            if events != manifest["events"]:
                raise RuntimeError(f"import stored {events} events; file {manifest}")
            runs.append({"archive_s": round(archive_s, 2), "import_s": round(import_s, 2),
                         "ratio": round(archive_s / import_s, 3), "archive_max_rss_kb": archive_rss,
                         "import_max_rss_kb": max_rss_kb(ireport), "archive_summary": out.strip().splitlines()[0]})
    finally:
        server.stop()
    archive_s = statistics.median(r["archive_s"] for r in runs)
    import_s = statistics.median(r["import_s"] for r in runs)
    events_per_s = manifest["events"] / archive_s
    gzip_mb_per_s = manifest["file_bytes"] / 1e6 / archive_s
    usable = LAMBDA_TIMEOUT_S - LAMBDA_RESERVE_S
    hour_s = HOUR_GZIP_MB / gzip_mb_per_s
    return {
        "file": str(path), "hour": ARCHIVE_HOUR, "events": manifest["events"], "push_events": manifest["push_events"],
        "ndjson_bytes": manifest["bytes"], "gzip_bytes": manifest["file_bytes"], "runs": runs,
        "archive_s_median": round(archive_s, 2), "import_s_median": round(import_s, 2),
        "ratio_of_medians": round(archive_s / import_s, 3),
        "archive_max_rss_kb_max": max(r["archive_max_rss_kb"] for r in runs),
        "archive_events_per_s": round(events_per_s),
        "archive_gzip_mb_per_s": round(gzip_mb_per_s, 3),
        "archive_ndjson_mb_per_s": round(manifest["bytes"] / 1e6 / archive_s, 2),
        "lambda_usable_s": usable,
        "lambda_invocation_events": round(events_per_s * usable),
        "lambda_invocation_gzip_mb": round(gzip_mb_per_s * usable, 1),
        "hour_gzip_mb": HOUR_GZIP_MB,
        "hour_s": round(hour_s),
        "hour_invocations": max(1, -(-round(hour_s) // usable)),
    }


# ---------------------------------------------------------------- report

def machine(a):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "postgres": psql(a.admin, "SHOW server_version").strip(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(results):
    lines = []
    cap = results.get("capture", {})
    if cap:
        lines += ["", "Capture (ghevents run vs github-sim, both 2015-01-01 hours)", "",
                  "| feed | events/s | X-Poll-Interval s | budget | run s | released | /events requests (by status) | stored | new per request | share captured | ceiling | share / ceiling | duplicates stored | served not stored | violations | min gap between cycles ms | cycles by pages |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in cap.items():
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["requests_by_status"].items()))
            pages = ", ".join(f"{p}: {n}" for p, n in r["cycles_by_pages"].items())
            budget = f"{r['budget']} ({r['identity']}, {r['window_s']} s window)"
            lines.append(f"| {name} | {r['feed_events_per_s']:g} | {r['poll_interval_s']} | {budget} | {r['run_s']} | {r['released']} | "
                         f"{r['events_requests']} ({statuses}) | {r['stored']} | {r['new_per_request']} | {r['coverage']:.2%} | "
                         f"{r['ceiling']:.2%} | {r['share_of_ceiling']:.3f} | {r['duplicates_stored']} | {r['served_not_stored']} | "
                         f"{r['violations']} | {r['min_gap_between_cycles_ms']} | {pages} |")
        lines += ["", "ceiling = min(1, budget x 100 / released): a full page of new events for every request the budget allows."]
    imp = results.get("import")
    if imp:
        lines += ["", f"Import ({imp['events']} events, {imp['push_events']} PushEvents, {imp['bytes'] / 1e6:.0f} MB NDJSON)", "",
                  "| run | psql \\copy s | ghevents import s | ratio |", "|---|---|---|---|"]
        for i, r in enumerate(imp["runs"], 1):
            lines.append(f"| {i} | {r['copy_s']} | {r['import_s']} | {r['ratio']} |")
        lines.append(f"| median | {imp['copy_s_median']} ({imp['copy_events_per_s']} events/s) | "
                     f"{imp['import_s_median']} ({imp['import_events_per_s']} events/s) | {imp['ratio_of_medians']} |")
    fp = results.get("footprint")
    if fp:
        lines += ["", "Footprint (one `ghevents ingest --once` storing 300 events)", "",
                  "| run | peak RSS KiB | wall s |", "|---|---|---|"]
        for i, r in enumerate(fp["runs"], 1):
            lines.append(f"| {i} | {r['max_rss_kb']} | {r['wall_s']} |")
        lines.append(f"| median | {fp['max_rss_kb_median']} | {fp['wall_s_median']} |")
    arc = results.get("archive")
    if arc:
        lines += ["", f"Archive hour ({arc['events']} events, {arc['ndjson_bytes'] / 1e6:.0f} MB NDJSON, "
                      f"{arc['gzip_bytes'] / 1e6:.0f} MB gzip, served over local HTTP)", "",
                  "| run | ghevents archive s | ghevents import s | ratio archive/import | archive peak RSS KiB | import peak RSS KiB |",
                  "|---|---|---|---|---|---|"]
        for i, r in enumerate(arc["runs"], 1):
            lines.append(f"| {i} | {r['archive_s']} | {r['import_s']} | {r['ratio']} | {r['archive_max_rss_kb']} | {r['import_max_rss_kb']} |")
        lines.append(f"| median | {arc['archive_s_median']} | {arc['import_s_median']} | {arc['ratio_of_medians']} | "
                     f"max {arc['archive_max_rss_kb_max']} | |")
        lines += ["", f"archive/import time ratio: {arc['ratio_of_medians']} (goal <= 1.1); "
                      f"archive peak RSS: {arc['archive_max_rss_kb_max'] / 1024:.1f} MiB (goal <= 100 MiB)",
                  f"archive rate: {arc['archive_events_per_s']} events/s, {arc['archive_ndjson_mb_per_s']} MB/s NDJSON, "
                  f"{arc['archive_gzip_mb_per_s']} MB/s gzip",
                  f"one {LAMBDA_TIMEOUT_S} s invocation ({arc['lambda_usable_s']} s of import) holds at this rate: "
                  f"{arc['lambda_invocation_events']} events, {arc['lambda_invocation_gzip_mb']} MB gzip",
                  f"a {arc['hour_gzip_mb']} MB (gzip) hour at this rate: {arc['hour_s']} s, "
                  f"{arc['hour_invocations']} invocation(s), resumed from the committed line offset"]
    m = results["machine"]
    lines += ["", f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, PostgreSQL {m['postgres']}, "
                  f"load average {m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="capture,import,footprint",
                    help="comma-separated: capture, import, footprint, archive (archive runs only when named)")
    ap.add_argument("--ghevents", type=Path, default=TARGET / "release" / "ghevents")
    ap.add_argument("--sim", type=Path, default=TARGET / "release" / "github-sim")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("GHEVENTS_DATA_DIR") or REPO.parent / "shared" / "data"))
    ap.add_argument("--database-url", dest="admin", default=os.environ.get("DATABASE_URL") or DEFAULT_ADMIN,
                    help="a database on the server the benchmark creates its own databases on")
    ap.add_argument("--out", type=Path, default=TARGET / "bench")
    ap.add_argument("--feeds", type=lambda v: [parse_feed(f) for f in v.split(",") if f],
                    default=[parse_feed(f) for f in DEFAULT_FEEDS.split(",")],
                    help="comma-separated RATE:SECS[:POLL_INTERVAL[:token]] (events/s, run seconds, X-Poll-Interval, "
                         f"a token's budget instead of the anonymous one); shorten the runs here. Default {DEFAULT_FEEDS}")
    ap.add_argument("--token-limit", type=int, default=5000, help="requests per hour with a token")
    ap.add_argument("--initial", type=int, default=300)
    ap.add_argument("--window", type=int, default=60, help="anonymous rate-limit window, seconds")
    ap.add_argument("--limit", type=int, default=60, help="anonymous requests per window")
    ap.add_argument("--poll-interval", type=int, default=1, help="X-Poll-Interval, seconds, for feeds that name none")
    ap.add_argument("--import-events", type=int, default=200_000)
    ap.add_argument("--import-reps", type=int, default=3)
    ap.add_argument("--footprint-reps", type=int, default=3)
    ap.add_argument("--archive-events", type=int, default=200_000)
    ap.add_argument("--archive-bytes", type=int, default=500_000_000, help="NDJSON bytes of the generated hour")
    ap.add_argument("--archive-reps", type=int, default=1)
    a = ap.parse_args()
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    for p in parts:
        if p not in ("capture", "import", "footprint", "archive"):
            sys.exit(f"bench: unknown part {p!r}")
    for binary in (a.ghevents, a.sim):
        if not binary.is_file():
            sys.exit(f"bench: {binary} not found (build it: cargo build --release -p ghevents-cli -p github-sim)")
    if not (a.data_dir / "gharchive").is_dir():
        sys.exit(f"bench: GitHub data not found at {a.data_dir} (set GHEVENTS_DATA_DIR)")
    try:
        psql(a.admin, "SELECT 1")
    except RuntimeError as e:
        sys.exit(f"bench: cannot reach Postgres at {a.admin} (set DATABASE_URL): {e}")
    a.out.mkdir(parents=True, exist_ok=True)

    results = {"machine": machine(a), "ghevents": str(a.ghevents)}
    if "capture" in parts:
        results["capture"] = {f["name"]: capture(a, f) for f in a.feeds}
        results["capture_settings"] = {"initial": a.initial, "window_s": a.window, "limit": a.limit,
                                       "token_limit": a.token_limit, "shuffle_block": 8}
    if "import" in parts:
        results["import"] = import_bench(a)
    if "footprint" in parts:
        results["footprint"] = footprint(a)
    if "archive" in parts:
        results["archive"] = archive_bench(a)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten: {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
