#!/usr/bin/env python3
"""The crash campaign: break ghevents at many moments and check, from the simulator's ground
truth, that nothing was lost, duplicated or forgotten. Run it through scripts/campaign.sh,
which builds the binaries (with failpoints) and finds LocalStack's venv.

Everything runs on the campaign's own services: a throwaway PostgreSQL cluster (initdb on a
free port), its own LocalStack (another free port), and github-sim instances. The real
binaries are run and killed: `ghevents` (migrate, ingest --once, run, enrich --once, import)
and `lambda-local` (the ingest and enrich Lambda handlers; tools/lambda-local).

Two phases, each on its own database and simulator:
  cli     local mode (no queue): kills at named failpoints and at seeded random times in
          migrate/ingest/run/enrich/import, two `pg_ctl restart -m immediate` during a busy
          run, and GitHub's misbehaviour from github-sim.
  lambda  the functions' handlers with RAW_PAYLOAD_STORE=s3 and an SQS queue: kills at the
          ingest/outbox/enrich failpoints and at random times, LocalStack stopped and started
          during ingest, duplicate and reordered deliveries, overlapping invocations, a
          redrive from the dead-letter queue, 401s during enrichment.

Then: every served event stored exactly once, every push event completed / failed with an
error / still on its way (queue message, outbox row, or due for the worker), no request
sent while the budget was spent (simulator violations), no panic in any log. Prints a table
and writes docs/reliability.md. Standard library only.
"""

import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
T0 = time.time()


def log(msg):
    print(f"[campaign {time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    with OPENER.open(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


# ------------------------------------------------------------------ PostgreSQL

def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: -int(p.parent.name)):
        if (d / name).exists():
            return str(d / name)
    raise SystemExit(f"campaign: {name} not found (apt-get install postgresql)")


class Postgres:
    """A throwaway cluster on a free port, trust auth, fsync off."""

    def __init__(self, port):
        self.port = port
        self.dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ghevents-campaign-pg-{port}"
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.restarts = 0

    def _as_pg(self, args, **kw):
        if os.getuid() == 0:
            user = "postgres" if subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
            args = ["runuser", "-u", user, "--"] + args
        return subprocess.run(args, cwd="/", **kw)

    def start(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "sock").mkdir(parents=True)
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "postgres", str(self.dir)], check=False)
        self.dir.chmod(0o700)
        r = self._as_pg([pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--no-locale"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"initdb failed: {r.stderr}")
        self._ctl("start")

    def _ctl(self, *what):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}/sock "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        r = self._as_pg([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                         "-o", opts, *what], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(what)} failed: {r.stderr} {r.stdout}")

    def restart_immediate(self):
        self._ctl("restart", "-m", "immediate")
        self.restarts += 1

    def stop(self):
        try:
            self._ctl("stop", "-m", "immediate")
        except Exception as e:  # already down
            log(f"postgres stop: {e}")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, db, query):
        for attempt in range(20):
            r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url(db), "-c", query],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
            if "starting up" in r.stderr or "could not connect" in r.stderr or "terminating" in r.stderr:
                time.sleep(0.5)
                continue
            raise RuntimeError(f"psql failed ({query[:120]}): {r.stderr.strip()}")
        raise RuntimeError(f"psql never connected: {query[:80]}")

    def rows(self, db, query):
        out = self.sql(db, query).strip()
        return [line.split("|") for line in out.splitlines()] if out else []


# ------------------------------------------------------------------ LocalStack

class LocalStack:
    """Its own LocalStack (S3, SQS) from scripts/localstack.sh's venv, on a free port."""

    def __init__(self, venv_bin, port, work):
        self.python = Path(venv_bin) / "python"
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.work = work
        self.proc = None
        self.logfile = work / "localstack.log"
        self.restarts = 0

    def start(self):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("AWS_", "LOCALSTACK")):
                del env[k]
        (self.work / "ls-tmp").mkdir(parents=True, exist_ok=True)
        env.update(OVERRIDE_IN_DOCKER="0", GATEWAY_LISTEN=f"127.0.0.1:{self.port}", GATEWAY_SERVER="hypercorn",
                   SQS_ENDPOINT_STRATEGY="path", DNS_ADDRESS="0", DISABLE_EVENTS="1", SERVICES="s3,sqs",
                   LOCALSTACK_HOST=f"127.0.0.1:{self.port}", TMPDIR=str(self.work / "ls-tmp"),
                   FILESYSTEM_ROOT=str(self.work / "ls-fs"))
        out = open(self.logfile, "a")
        self.proc = subprocess.Popen([str(self.python), "-m", "localstack.runtime.main"], env=env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"LocalStack exited early; see {self.logfile}")
            try:
                h = http("GET", f"{self.endpoint}/_localstack/health", timeout=3)
                if all(h.get("services", {}).get(s) in ("available", "running") for s in ("s3", "sqs")):
                    return
            except Exception:
                pass
            time.sleep(1)
        raise SystemExit(f"LocalStack not healthy after 180 s; see {self.logfile}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# ------------------------------------------------------------------ github-sim

class Sim:
    def __init__(self, binary, args, logfile):
        self.logfile = logfile
        self.proc = subprocess.Popen([str(binary), "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=open(logfile, "w"), text=True, env={**os.environ, "RUST_LOG": "github_sim=info"})
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise SystemExit(f"github-sim did not start; see {logfile}")

    def fault(self, prefix, count, fault, skip=0):
        http("POST", f"{self.url}/_sim/faults", {"path_prefix": prefix, "count": count, "skip": skip, "fault": fault})

    def clear(self):
        http("DELETE", f"{self.url}/_sim/faults")

    def pending(self):
        return http("GET", f"{self.url}/_sim/faults")

    def release(self, n):
        return http("POST", f"{self.url}/_sim/release", {"count": n})["released"]

    def stats(self):
        return http("GET", f"{self.url}/_sim/stats", timeout=30)

    def rate(self):
        return http("GET", f"{self.url}/rate_limit")["rate"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Releaser(threading.Thread):
    """Releases events onto the simulator's timeline at a steady rate while enabled."""

    def __init__(self, sim, per_sec):
        super().__init__(daemon=True)
        self.sim, self.per_sec, self.on, self.done = sim, per_sec, threading.Event(), threading.Event()
        self.on.set()

    def run(self):
        while not self.done.is_set():
            if self.on.is_set():
                try:
                    self.sim.release(self.per_sec)
                except Exception:
                    pass
            time.sleep(1)


# ------------------------------------------------------------------ processes

class Runner:
    """Runs the binaries with per-process logs, kills them, and remembers every log."""

    def __init__(self, work, bins):
        self.work, self.bins = work, bins
        self.logs = []
        self.n = 0
        self.kills = []  # (kind, detail)

    def _log(self, name):
        self.n += 1
        p = self.work / "logs" / f"{self.n:04d}-{name}.log"
        self.logs.append(p)
        return p

    def spawn(self, binary, args, env, name, failpoints=None):
        e = dict(env)
        if failpoints:
            e["FAILPOINTS"] = failpoints
        logp = self._log(name)
        f = open(logp, "w")
        f.write(f"# {binary} {' '.join(args)} FAILPOINTS={failpoints or ''}\n")
        f.flush()
        p = subprocess.Popen([str(self.bins[binary]), *args], env=e, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        p.logpath = logp
        return p

    def run(self, binary, args, env, name, timeout=120):
        p = self.spawn(binary, args, env, name)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            log(f"{name}: killed after {timeout} s (hung)")
            return 124, p.logpath.read_text(errors="replace")
        return p.returncode, p.logpath.read_text(errors="replace")

    def kill9(self, p, kind, detail):
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            with open(p.logpath, "a") as f:
                f.write(f"\n# campaign: SIGKILL ({kind}: {detail})\n")
            self.kills.append((kind, detail))
            return True
        return False

    def at_failpoint(self, binary, args, env, name, point, action="return", timeout=25):
        """Runs until `point` is reached, then kill -9. Returns True if it was reached."""
        p = self.spawn(binary, args, env, name, failpoints=f"{point}={action}")
        marker = f"failpoint {point} reached"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if marker in p.logpath.read_text(errors="replace"):
                time.sleep(0.05)
                return self.kill9(p, "failpoint", f"{binary} {args[0]} at {point}")
            if p.poll() is not None:
                return False
            time.sleep(0.05)
        if p.poll() is None:
            p.kill()
            p.wait()
        return False

    def at_random(self, binary, args, env, name, delay):
        p = self.spawn(binary, args, env, name)
        try:
            p.wait(delay)
            return False  # finished before the kill
        except subprocess.TimeoutExpired:
            return self.kill9(p, "random", f"{name}@{delay:.2f}s")


# ------------------------------------------------------------------ the campaign

class Segment:
    """A stretch of the campaign dedicated to one fault kind; what was served and stored
    during it is attributed to it."""

    def __init__(self, phase, kind):
        self.phase, self.kind = phase, kind
        self.injected = 0
        self.start = self.end = None
        self.notes = []


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.work)
        if self.work.exists():
            shutil.rmtree(self.work)
        (self.work / "logs").mkdir(parents=True)
        self.bins = {k: Path(v) for k, v in json.loads(os.environ["CAMPAIGN_BINS"]).items()}
        self.run = Runner(self.work, self.bins)
        self.segments = []
        self.problems = []
        data = Path(os.environ.get("GHEVENTS_DATA_DIR", REPO.parent / "shared" / "data")) / "gharchive"
        self.hour = data / "2015-01-01-0.json.gz"
        self.import_file = data / "2021-07-21-first-200-of-hours-06-09.json.gz"
        self.scale = 0.35 if args.short else 1.0

    def n(self, full):
        return max(1, round(full * self.scale))

    def seg(self, phase, kind):
        s = Segment(phase, kind)
        s.start = time.time()
        self.segments.append(s)
        return s

    # -------------------------------------------------------------- helpers
    def cli_env(self, db, sim):
        return {"PATH": os.environ["PATH"], "DATABASE_URL": self.pg.url(db), "GITHUB_API_URL": sim.url,
                "RUST_LOG": "info,refinery_core=warn,tokio_postgres=warn", "RUST_BACKTRACE": "1", "NO_COLOR": "1",
                "ENRICH_MAX_ATTEMPTS": "3", "HOME": os.environ.get("HOME", "/root")}

    def until_due(self, db, cap=10):
        """Waits until the feed may be polled again (poll_state.next_poll_at), at most `cap` s."""
        try:
            rows = self.pg.rows(db, "SELECT GREATEST(0, EXTRACT(EPOCH FROM (next_poll_at - now()))) FROM poll_state WHERE feed = 'events'")
        except RuntimeError:  # not migrated yet
            rows = []
        due_in = float(rows[0][0]) if rows and rows[0][0] else 0
        if due_in > 0:
            time.sleep(min(due_in, cap) + 0.05)
        if due_in > cap:
            # The capture planner spaces the polls of a feed that brings little (up to 5 min):
            # the campaign does not wait that long, it brings the poll forward, as the passage
            # of time would. Counted in the report.
            self.pg.sql(db, "UPDATE poll_state SET next_poll_at = now() WHERE feed = 'events' AND next_poll_at > now()")
            self.polls_brought_forward = getattr(self, "polls_brought_forward", 0) + 1

    def ingest_named(self, db, binary, args, env, point, seg, attempts=6):
        for _ in range(attempts):
            self.until_due(db)
            if self.run.at_failpoint(binary, args, env, f"{args[0]}-{point.replace(':', '_')}", point):
                seg.injected += 1
                return True
            time.sleep(0.5)
        seg.notes.append(f"{point} not reached")
        return False

    # -------------------------------------------------------------- phase: cli
    def phase_cli(self):
        db = "camp_cli"
        self.pg.sql("postgres", f"CREATE DATABASE {db}")
        sim = Sim(self.bins["github-sim"], ["--file", str(self.hour), "--initial", "300", "--manual", "--shuffle-block", "8",
                                            "--seed", str(self.args.seed), "--window-secs", "10", "--limit-anon", "150",
                                            "--poll-interval", "1"], self.work / "logs" / "sim-cli.log")
        self.sims["cli"] = sim
        env = self.cli_env(db, sim)
        g = "ghevents"

        s = self.seg("cli", "kill -9 in migrations (failpoint migrate::mid, random time)")
        if self.run.at_failpoint(g, ["migrate"], env, "migrate-fp", "migrate::mid"):
            s.injected += 1
        for _ in range(self.n(3)):
            if self.run.at_random(g, ["migrate"], env, "migrate-rand", self.rng.uniform(0.01, 0.15)):
                s.injected += 1
        rc, out = self.run.run(g, ["migrate"], env, "migrate")
        if rc != 0:
            self.problems.append(f"migrate after kills failed: {out[-300:]}")
        s.end = time.time()

        rel = Releaser(sim, 3)
        rel.start()
        self.releasers.append(rel)

        s = self.seg("cli", "kill -9 at named failpoints: ingest --once")
        points = ["ingest::after_s3_put", "ingest::after_commit", "store::before_commit", "ingest::before_record_end"]
        for i in range(self.n(8)):
            self.ingest_named(db, g, ["ingest", "--once"], env, points[i % len(points)], s)
            self.until_due(db)
            self.run.run(g, ["ingest", "--once"], env, "ingest-after-kill")
        s.end = time.time()

        s = self.seg("cli", "kill -9 at named failpoints: enrich --once")
        points = ["enrich::inside_lease", "enrich::inside_fetch_lease", "enrich::before_complete"]
        for i in range(self.n(6)):
            self.until_due(db)
            self.run.run(g, ["ingest", "--once"], env, "ingest-feed")
            if self.run.at_failpoint(g, ["enrich", "--once"], env, "enrich-fp", points[i % len(points)]):
                s.injected += 1
            else:
                s.notes.append(f"{points[i % len(points)]} not reached")
        s.end = time.time()

        s = self.seg("cli", "kill -9 at named failpoints and random times: import")
        for i in range(self.n(3)):
            if self.run.at_failpoint(g, ["import", "--batch-size", "50", str(self.import_file)], env, "import-fp",
                                     "import::mid_batch", action=f"{i + 1}*off->return"):
                s.injected += 1
            if self.run.at_random(g, ["import", "--batch-size", "50", str(self.import_file)], env, "import-rand",
                                  self.rng.uniform(0.05, 0.6)):
                s.injected += 1
        rc, out = self.run.run(g, ["import", str(self.import_file)], env, "import-final", timeout=300)
        if rc != 0:
            s.notes.append(f"final import exit {rc}")
        s.end = time.time()

        s = self.seg("cli", "kill -9 at seeded random times: run (ingest + enrichment)")
        for _ in range(self.n(20)):
            if self.run.at_random(g, ["run"], env, "run-rand", self.rng.uniform(0.2, 4.0)):
                s.injected += 1
        s.end = time.time()

        s = self.seg("cli", "PostgreSQL restarted (-m immediate) during a busy run")
        p = self.run.spawn(g, ["run"], env, "run-pg-restart")
        for _ in range(2):
            time.sleep(self.rng.uniform(2.0, 5.0))
            self.pg.restart_immediate()
            s.injected += 1
        time.sleep(6)
        if p.poll() is not None:
            self.problems.append(f"`ghevents run` exited ({p.returncode}) after a Postgres restart; see {p.logpath}")
            s.notes.append(f"run exited {p.returncode} after a restart")
        else:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                self.run.kill9(p, "cleanup", "run did not stop on Ctrl-C")
        s.end = time.time()

        # GitHub faults, each against a running `ghevents run`.
        p = self.run.spawn(g, ["run"], env, "run-github-faults")

        def fault_seg(kind, arm, settle=4.0):
            s = self.seg("cli", kind)
            s.injected += arm()
            time.sleep(settle)
            s.end = time.time()

        def rollover_burst():
            reset = sim.rate()["reset"]
            time.sleep(max(0.0, reset - time.time() - 1.5))
            sim.fault("/events", 8, {"kind": "bare", "code": 502})
            sim.fault("/users/", 4, {"kind": "bare", "code": 503})
            sim.fault("/repos/", 4, {"kind": "bare", "code": 500})
            return 16
        fault_seg("GitHub 5xx without rate headers, across a window rollover", rollover_burst, 8)
        fault_seg("GitHub 429 without headers", lambda: (sim.fault("/events", 2, {"kind": "bare", "code": 429}),
                                                        sim.fault("/users/", 2, {"kind": "bare", "code": 429}), 4)[-1], 6)
        fault_seg("GitHub slow answers past the deadline (45 s)", lambda: (sim.fault("/events", 1, {"kind": "slow", "ms": 45000}),
                                                                           sim.fault("/repos/", 1, {"kind": "slow", "ms": 45000}), 2)[-1], 50)
        fault_seg("GitHub page with a lone surrogate (\\ud83d) in one event",
                  lambda: (sim.fault("/events", 1, {"kind": "lone_surrogate"}), 1)[-1], 6)
        fault_seg("GitHub 401 on /users and /repos during enrichment",
                  lambda: (sim.fault("/users/", 3, {"kind": "status", "code": 401}),
                           sim.fault("/repos/", 3, {"kind": "status", "code": 401}), 6)[-1], 6)

        def absurd():
            sim.fault("/events", 1, {"kind": "poll_interval", "secs": 1000000000})
            sim.fault("/events", 1, {"kind": "poll_interval", "secs": 10000000000000}, skip=0)
            sim.fault("/events", 1, {"kind": "retry_after", "code": 429, "secs": 1000000000})
            sim.fault("/users/", 1, {"kind": "retry_after", "code": 403, "secs": 10000000000000})
            return 4
        alive = p.poll() is None
        if not alive:
            self.problems.append(f"`ghevents run` exited ({p.returncode}) during the GitHub faults; see {p.logpath}")
        else:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                self.run.kill9(p, "cleanup", "run did not stop on Ctrl-C")

        # A process sleeping on an absurd wait would not meet the next fault: one-shot
        # commands here, which read the stored waits afresh.
        s = self.seg("cli", "GitHub absurd Retry-After / X-Poll-Interval (1e9, 1e13 s)")
        s.injected += absurd()
        longest = 0.0
        for _ in range(10):
            if not sim.pending():
                break
            self.run.run(g, ["ingest", "--once"], env, "ingest-absurd", timeout=60)
            self.run.run(g, ["enrich", "--once"], env, "enrich-absurd", timeout=120)
            w = self.pg.rows(db, """SELECT GREATEST(
                   COALESCE((SELECT MAX(EXTRACT(EPOCH FROM (next_poll_at - now()))) FROM poll_state), 0),
                   COALESCE((SELECT MAX(EXTRACT(EPOCH FROM (retry_after_until - now()))) FROM rate_limit_state), 0))""")
            longest = max(longest, float(w[0][0]) if w and w[0][0] else 0.0)
            # The waits the faults caused are measured; to meet the next fault, end them.
            self.pg.sql(db, "UPDATE poll_state SET next_poll_at = now(); UPDATE rate_limit_state SET retry_after_until = NULL")
        s.notes.append(f"{len(sim.pending())} of the faults left unmet" if sim.pending() else "all met")
        s.notes.append(f"longest stored wait {longest:.0f} s")
        s.end = time.time()
        sim.clear()
        self.wait_clamp["cli"] = longest

        # Settle: no more releases, no more faults; catch up and drain.
        rel.on.clear()
        self.settle_cli(db, env)

    def settle_cli(self, db, env):
        log("cli: settling (no faults, no new events)")
        self.pg.sql(db, "UPDATE poll_state SET next_poll_at = now(); UPDATE rate_limit_state SET retry_after_until = NULL")
        for _ in range(8):
            self.until_due(db, cap=25)
            rc, out = self.run.run("ghevents", ["ingest", "--once"], env, "settle-ingest")
            if "not_modified" in out:
                break
        # Rows a killed worker leased stay leased for 5 minutes: the next worker may take them
        # then. The campaign does not wait; they count as "leased, will be retried".
        deadline = time.time() + (45 if self.args.short else 150)
        while time.time() < deadline:
            rc, out = self.run.run("ghevents", ["enrich", "--once"], env, "settle-enrich", timeout=180)
            due = self.pg.rows(db, "SELECT count(*) FROM push_events WHERE enrichment_status IN ('pending','in_progress') AND (locked_until IS NULL OR locked_until <= now())")
            if not due or due[0][0] == "0":
                break
            time.sleep(1)

    # -------------------------------------------------------------- phase: lambda
    def phase_lambda(self):
        db = "camp_lambda"
        self.pg.sql("postgres", f"CREATE DATABASE {db}")
        sim = Sim(self.bins["github-sim"], ["--file", str(self.hour), "--initial", "300", "--manual", "--shuffle-block", "8",
                                            "--seed", str(self.args.seed + 1), "--window-secs", "10", "--limit-anon", "150",
                                            "--poll-interval", "1"], self.work / "logs" / "sim-lambda.log")
        self.sims["lambda"] = sim
        ls = self.ls
        aws = {"AWS_ENDPOINT_URL": ls.endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "NO_PROXY": "127.0.0.1,localhost"}
        base = {**self.cli_env(db, sim), **aws}
        L = "lambda-local"
        rc, out = self.run.run(L, ["setup", "--bucket", "campaign-raw", "--queue", "campaign-enrich", "--visibility", "8",
                                   "--max-receive", "1000"], base, "setup")
        q = json.loads(out.strip().splitlines()[-1])
        self.queue = q
        env = {**base, "RAW_PAYLOAD_STORE": "s3", "RAW_PAYLOAD_BUCKET": "campaign-raw", "ENRICH_QUEUE_URL": q["queue_url"]}
        self.lambda_env = env

        rel = Releaser(sim, 3)
        rel.start()
        self.releasers.append(rel)

        s = self.seg("lambda", "kill -9 at named failpoints: ingest function (S3 put, commit, SQS send, outbox)")
        points = ["ingest::after_s3_put", "ingest::after_commit", "ingest::after_sqs_send", "store::before_commit",
                  "outbox::after_send", "ingest::before_record_end"]
        for i in range(self.n(12)):
            point = points[i % len(points)]
            if point == "outbox::after_send":
                # The outbox needs rows committed and never sent: crash right after a commit first.
                self.ingest_named(db, L, ["ingest"], env, "ingest::after_commit", s)
            self.ingest_named(db, L, ["ingest"], env, point, s)
            self.until_due(db)
            self.run.run(L, ["ingest"], env, "ingest-after-kill")
        s.end = time.time()

        s = self.seg("lambda", "kill -9 at named failpoints: enrich function")
        points = ["enrich::inside_lease", "enrich::inside_fetch_lease", "enrich::before_complete"]
        for i in range(self.n(6)):
            if self.run.at_failpoint(L, ["enrich", "--batches", "1"], env, "enrich-fp", points[i % len(points)]):
                s.injected += 1
            else:
                s.notes.append(f"{points[i % len(points)]} not reached")
            self.until_due(db)
            self.run.run(L, ["ingest"], env, "ingest-feed")
        s.end = time.time()

        s = self.seg("lambda", "kill -9 at seeded random times: ingest and enrich functions")
        for i in range(self.n(30)):
            self.until_due(db)
            which = ["ingest"] if i % 2 == 0 else ["enrich", "--batches", "3"]
            # A function invocation often ends within a second: kill early enough to meet it.
            if self.run.at_random(L, which, env, f"{which[0]}-rand", self.rng.uniform(0.03, 0.6)):
                s.injected += 1
        s.end = time.time()

        s = self.seg("lambda", "two overlapping ingest invocations")
        for _ in range(self.n(4)):
            self.until_due(db)
            a = self.run.spawn(L, ["ingest"], env, "ingest-overlap-a")
            b = self.run.spawn(L, ["ingest"], env, "ingest-overlap-b")
            a.wait(120)
            b.wait(120)
            s.injected += 1
        s.end = time.time()

        s = self.seg("lambda", "LocalStack stopped and started during ingest")
        for _ in range(1 if self.args.short else 2):
            rc, out = self.run.run(L, ["save", "--bucket", "campaign-raw", "--queue-url", q["queue_url"], "--queue-url",
                                       q["dlq_url"], str(self.work / "ls-save")], base, "ls-save", timeout=300)
            if rc != 0:
                self.problems.append(f"saving LocalStack state failed: {out[-300:]}")
            ls.stop()
            ls.restarts += 1
            s.injected += 1
            down_until = time.time() + 6
            while time.time() < down_until:
                self.run.run(L, ["ingest"], env, "ingest-ls-down", timeout=90)
                time.sleep(0.5)
            ls.start()
            rc, out = self.run.run(L, ["setup", "--bucket", "campaign-raw", "--queue", "campaign-enrich", "--visibility",
                                       "8", "--max-receive", "1000"], base, "setup-again")
            again = json.loads(out.strip().splitlines()[-1])
            if again["queue_url"] != q["queue_url"]:
                self.problems.append(f"queue URL changed across the restart: {again['queue_url']}")
            rc, out = self.run.run(L, ["restore", "--bucket", "campaign-raw", "--queue-url", q["queue_url"], "--queue-url",
                                       q["dlq_url"], str(self.work / "ls-save")], base, "ls-restore", timeout=300)
            if rc != 0:
                self.problems.append(f"restoring LocalStack state failed: {out[-300:]}")
            for _ in range(3):
                self.until_due(db)
                self.run.run(L, ["ingest"], env, "ingest-ls-up")
        s.notes.append("LocalStack keeps no state across a restart: the bucket and queues are saved and put back, as S3 and SQS would keep them")
        s.end = time.time()

        s = self.seg("lambda", "duplicate and reordered SQS deliveries")
        ids = [int(r[0]) for r in self.pg.rows(db, "SELECT push_id FROM push_events ORDER BY random() LIMIT 12")]
        self.before_enriched = dict(
            (int(r[0]), r[1]) for r in self.pg.rows(db, "SELECT push_id, enriched_at FROM push_events WHERE enrichment_status = 'completed'"))
        msgs = ids + ids
        self.rng.shuffle(msgs)
        msgs.reverse()
        self.run.run(L, ["send", "--queue-url", q["queue_url"], *map(str, msgs)], base, "send-dupes")
        s.injected += len(ids)
        s.end = time.time()

        s = self.seg("lambda", "GitHub 401 on /users and /repos during enrichment (functions)")
        sim.fault("/users/", 3, {"kind": "status", "code": 401})
        sim.fault("/repos/", 3, {"kind": "status", "code": 401})
        s.injected += 6
        self.run.run(L, ["enrich", "--batches", "6"], env, "enrich-401", timeout=300)
        s.end = time.time()

        s = self.seg("lambda", "a message redriven from the dead-letter queue")
        some = [r[0] for r in self.pg.rows(db, "SELECT push_id FROM push_events ORDER BY push_id LIMIT 3")]
        self.run.run(L, ["send", "--queue-url", q["dlq_url"], *some], base, "send-dlq")
        rc, out = self.run.run(L, ["redrive", "--from", q["dlq_url"], "--to", q["queue_url"]], base, "redrive")
        try:
            s.injected += json.loads(out.strip().splitlines()[-1])["moved"]
        except Exception:
            s.notes.append("redrive output unreadable")
        s.end = time.time()

        rel.on.clear()
        sim.clear()
        self.settle_lambda(db, env, base)

    def settle_lambda(self, db, env, base):
        log("lambda: settling (no faults, no new events)")
        L = "lambda-local"
        self.pg.sql(db, "UPDATE poll_state SET next_poll_at = now(); UPDATE rate_limit_state SET retry_after_until = NULL")
        for _ in range(8):
            self.until_due(db, cap=25)
            rc, out = self.run.run(L, ["ingest"], env, "settle-ingest")
            if '"not_modified"' in out:
                break
        # Rows leased by enrich functions the campaign killed stay leased for 300 s. Rather
        # than wait, the campaign ends those leases now (no live function holds one: every
        # process of the phase has exited): the outbox sweep of the next ingest invocation
        # must then send them again, which is what this checks.
        self.lease_ended = int(self.pg.rows(db, "WITH e AS (UPDATE push_events SET locked_until = now() - interval '1 second' WHERE enrichment_status = 'in_progress' AND locked_until > now() RETURNING 1) SELECT count(*) FROM e")[0][0])
        log(f"lambda: {self.lease_ended} leases of killed functions ended")
        # One more invocation sweeps and flushes the outbox even when the feed had nothing new.
        self.until_due(db, cap=25)
        self.run.run(L, ["ingest"], env, "settle-ingest-flush")
        deadline = time.time() + (45 if self.args.short else 150)
        while time.time() < deadline:
            self.run.run(L, ["enrich", "--idle", "3"], env, "settle-enrich", timeout=300)
            rc, out = self.run.run(L, ["count", "--queue-url", self.queue["queue_url"]], base, "count")
            c = json.loads(out.strip().splitlines()[-1])
            if c["visible"] == 0 and c["in_flight"] == 0:
                break
            time.sleep(2)

    # -------------------------------------------------------------- checks
    def check(self):
        results = {}
        for phase, db in (("cli", "camp_cli"), ("lambda", "camp_lambda")):
            if phase not in self.sims:
                continue
            sim = self.sims[phase]
            st = sim.stats()
            served = set(st["served_ids"])
            stored_rows = self.pg.rows(db, "SELECT event_id, source, EXTRACT(EPOCH FROM ingested_at) FROM github_events")
            stored_api = {r[0]: float(r[2]) for r in stored_rows if r[1] == "api"}
            stored_archive = {r[0] for r in stored_rows if r[1] == "archive"}
            dupe_events = self.pg.rows(db, "SELECT count(*) FROM (SELECT event_id FROM github_events GROUP BY 1 HAVING count(*) > 1) d")[0][0]
            dupe_push = self.pg.rows(db, "SELECT count(*) FROM (SELECT event_id FROM push_events GROUP BY 1 HAVING count(*) > 1) d")[0][0]
            lost = sorted(served - set(stored_api))
            phantom = sorted(set(stored_api) - served)
            released = set(st["released_ids"])
            never_served = len(released - served)
            res = {"served": len(served), "stored_api": len(stored_api), "lost": lost, "phantom": phantom,
                   "dupes": int(dupe_events) + int(dupe_push), "violations": sum(c["violations"] for c in st["clients"].values()),
                   "released": len(released), "never_served": never_served, "poisoned": st.get("poisoned_ids", [])}
            if phase == "cli":
                want = set()
                with gzip.open(self.import_file, "rt", encoding="utf-8", errors="replace") as f:
                    for line in f:
                        m = re.search(r'"id":"(\d+)"', line)
                        if m:
                            want.add(m.group(1))
                res["import_lost"] = sorted(want - stored_archive - set(stored_api))
                res["import_total"] = len(want)
            # Push events: done, failed with an error, or still on their way.
            pushes = self.pg.rows(db, """SELECT p.push_id, p.enrichment_status, coalesce(p.last_error, ''),
                   p.enqueued_at IS NULL, coalesce(p.locked_until > now(), false), EXTRACT(EPOCH FROM e.ingested_at)
                   FROM push_events p JOIN github_events e USING (event_id)""")
            queued = set()
            if phase == "lambda" and getattr(self, "queue", None):
                # Messages a handler returned (visibility 8 s) or postponed to the budget's
                # reset (10 s windows) are visible again after this.
                time.sleep(12)
                rc, out = self.run.run("lambda-local", ["peek", "--queue-url", self.queue["queue_url"]], self.lambda_env, "peek")
                queued = {str(x) for x in json.loads(out.strip().splitlines()[-1])["push_ids"]}
                rc, out = self.run.run("lambda-local", ["peek", "--queue-url", self.queue["dlq_url"]], self.lambda_env, "peek-dlq")
                res["dlq"] = len(json.loads(out.strip().splitlines()[-1])["push_ids"])
                rc, out = self.run.run("lambda-local", ["verify-raw"], self.lambda_env, "verify-raw", timeout=600)
                v = json.loads(out.strip().splitlines()[-1])
                res["raw_ok"], res["raw_unreadable"], res["raw_mismatched"] = v["ok"], v["unreadable"], v["mismatched"]
                changed = [pid for pid, at in getattr(self, "before_enriched", {}).items()
                           if self.pg.rows(db, f"SELECT enriched_at FROM push_events WHERE push_id = {pid}")[0][0] != at]
                res["redone"] = changed
            counts = {"completed": 0, "failed": 0, "failed_without_error": 0, "outbox": 0, "queued": 0, "leased": 0,
                      "due": 0, "forgotten": []}
            for pid, status, err, unsent, leased, at in pushes:
                if status == "completed":
                    counts["completed"] += 1
                elif status == "failed":
                    counts["failed" if err else "failed_without_error"] += 1
                    if not err:
                        counts["forgotten"].append((pid, float(at), "failed without last_error"))
                elif phase == "lambda" and unsent == "t":
                    counts["outbox"] += 1
                elif phase == "lambda" and pid in queued:
                    counts["queued"] += 1
                elif leased == "t":
                    counts["leased"] += 1
                    if phase == "lambda":
                        counts["forgotten"].append((pid, float(at), f"{status}, leased, no message"))
                elif phase == "cli":
                    counts["due"] += 1  # the Postgres worker takes every due row
                else:
                    counts["forgotten"].append((pid, float(at), f"{status}, no message, not in the outbox"))
            res["push"] = counts
            res["served_ts"] = {}
            results[phase] = res
        self.results = results
        # Panics in any log (the failpoints here never panic: they stop and wait for SIGKILL).
        panics = []
        for p in self.run.logs + sorted((self.work / "logs").glob("sim-*.log")):
            text = p.read_text(errors="replace") if p.exists() else ""
            for m in re.finditer(r"panicked at[^\n]*\n?[^\n]*", text):
                injected = "failpoint" in m.group(0)
                panics.append((p.name, m.group(0).strip()[:200], injected))
        self.panics = panics

    # -------------------------------------------------------------- report
    def attribute(self, phase, ts):
        segs = [s for s in self.segments if s.phase == phase]
        for s in segs:
            if s.start <= ts <= (s.end or time.time()):
                return s
        before = [s for s in segs if s.start <= ts]
        return before[-1] if before else (segs[0] if segs else None)

    def report(self, elapsed):
        # The commit the binaries were built from (read when the campaign started).
        commit, dirty = self.built_from
        # Losses are attributed to the segment in which the event was first served, forgotten
        # push events to the segment in which they were stored.
        first_served = {}
        for phase in self.results:
            for f in sorted((self.work / "served").glob(f"{phase}-*.json")):
                t = float(f.stem.split("-", 1)[1])
                for i in json.loads(f.read_text()):
                    first_served.setdefault((phase, i), t)
        rows = []
        per = {id(s): {"lost": 0, "forgotten": 0} for s in self.segments}
        for phase, r in self.results.items():
            for eid in r["lost"]:
                s = self.attribute(phase, first_served.get((phase, eid), time.time()))
                if s:
                    per[id(s)]["lost"] += 1
            for pid, at, why in r["push"]["forgotten"]:
                s = self.attribute(phase, at)
                if s:
                    per[id(s)]["forgotten"] += 1
        for s in self.segments:
            rows.append([s.phase, s.kind, str(s.injected), str(per[id(s)]["lost"]), "0", str(per[id(s)]["forgotten"]),
                         "; ".join(s.notes)])
        kills = len(self.run.kills)
        distinct = len({d for _, d in self.run.kills})
        total_lost = sum(len(r["lost"]) for r in self.results.values()) + len(self.results.get("cli", {}).get("import_lost", []))
        total_dupes = sum(r["dupes"] for r in self.results.values())
        total_forgotten = sum(len(r["push"]["forgotten"]) for r in self.results.values())
        violations = sum(r["violations"] for r in self.results.values())
        real_panics = [p for p in self.panics if not p[2]]
        checks = []

        def chk(name, ok, detail):
            checks.append((name, "ok" if ok else "FAILED", detail))
        for phase, r in self.results.items():
            chk(f"{phase}: every served event stored", not r["lost"],
                f"{r['served']} served, {r['stored_api']} stored, {len(r['lost'])} lost" + (f" (e.g. {', '.join(r['lost'][:3])})" if r["lost"] else ""))
            chk(f"{phase}: nothing stored twice", r["dupes"] == 0, f"{r['dupes']} duplicate rows")
            chk(f"{phase}: no event stored that was not served", not r["phantom"], f"{len(r['phantom'])}")
            pc = r["push"]
            chk(f"{phase}: every push event done, failed with an error, or on its way", not pc["forgotten"],
                f"completed {pc['completed']}, failed {pc['failed']}, outbox {pc['outbox']}, queued {pc['queued']}, "
                f"leased {pc['leased']}, due {pc['due']}, forgotten {len(pc['forgotten'])}"
                + (f", in the DLQ {r['dlq']}" if "dlq" in r else "")
                + (f" (e.g. {pc['forgotten'][0][0]}: {pc['forgotten'][0][2]})" if pc["forgotten"] else ""))
            chk(f"{phase}: no request while the budget was spent", r["violations"] == 0, f"{r['violations']} violations")
            if "import_lost" in r:
                chk("cli: every line of the imported file stored", not r["import_lost"],
                    f"{r['import_total']} events, {len(r['import_lost'])} missing")
            if "raw_ok" in r:
                chk("lambda: every event's raw bytes readable from S3", not r["raw_unreadable"] and not r["raw_mismatched"],
                    f"{r['raw_ok']} ok, {len(r['raw_unreadable'])} unreadable, {len(r['raw_mismatched'])} wrong")
                chk("lambda: duplicate deliveries redid nothing", not r["redone"], f"{len(r['redone'])} completed rows enriched again")
        chk("waits from absurd headers clamped to <= 3600 s", self.wait_clamp.get("cli", 0) <= 3600 + 5,
            f"longest poll wait after the faults: {self.wait_clamp.get('cli', 0):.0f} s")
        chk("no panic in any log", not real_panics, f"{len(real_panics)} panics ({len(self.panics) - len(real_panics)} injected by failpoints)"
            + (f"; first: {real_panics[0][0]}: {real_panics[0][1]}" if real_panics else ""))
        chk("kill -9 at >= 50 distinct moments", distinct >= 50 or self.args.short, f"{kills} kills, {distinct} distinct moments")
        for p in self.problems:
            chk("harness", False, p)

        hdr = ["phase", "fault", "injected", "lost", "duplicated", "forgotten", "notes"]
        md = []
        md.append("# Reliability: the crash campaign\n")
        md.append("Generated by `scripts/campaign.sh` from what it measured; do not edit by hand. "
                  "Rerun: `scripts/campaign.sh" + (" --short" if self.args.short else "") + f" --seed {self.args.seed}`.\n")
        md.append(f"- seed {self.args.seed}, {'short' if self.args.short else 'full'} run, {elapsed:.0f} s "
                  f"({elapsed / 60:.1f} min), commit `{commit}`{' (with uncommitted changes)' if dirty else ''}, "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
        md.append(f"- {kills} kill -9 at {distinct} distinct moments (failpoints and seeded random times); "
                  f"Postgres restarted {self.pg.restarts}×, LocalStack {self.ls.restarts if self.ls else 0}×")
        md.append("- lost: events the simulator served that are not stored, attributed to the stretch in which they were "
                  "first served; duplicated: rows stored twice (events, push events); forgotten: push events neither "
                  "completed, nor failed with an error, nor on their way (queue message, outbox row, due or leased "
                  "for the Postgres worker), attributed to the stretch in which they were stored\n")
        md.append("| " + " | ".join(hdr) + " |")
        md.append("|" + "---|" * len(hdr))
        for r in rows:
            md.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
        md.append(f"| **total** | | **{sum(int(r[2]) for r in rows)}** | **{total_lost}** | **{total_dupes}** | **{total_forgotten}** | |")
        md.append("\n## Checks\n")
        md.append("| check | result | measured |")
        md.append("|---|---|---|")
        for c in checks:
            md.append(f"| {c[0]} | {c[1]} | {' '.join(c[2].split()).replace('|', '/')} |")
        md.append("\n## How\n")
        md.append("- Its own PostgreSQL cluster (initdb on a free port, `pg_ctl restart -m immediate`), its own LocalStack "
                  "(S3, SQS; stopped with SIGTERM and started again), github-sim (manual clock, events released at 3/s, "
                  "150 requests per 10 s window, `X-Poll-Interval: 1`), the debug binaries built with `--features failpoints`.")
        md.append("- The enrich queue: visibility timeout 8 s and `maxReceiveCount` 1000. In production the visibility "
                  "timeout (720 s) outlives the 300 s row lease of a worker that died, so a returning message finds the "
                  "row free; here many short receives stand in for that time, so a message still outlives the lease.")
        md.append("- Named points: `FAILPOINTS=name=return` makes the process print `failpoint NAME reached` and stop "
                  "there; the campaign then sends SIGKILL. Random moments: SIGKILL after a seeded delay.")
        md.append("- After every kill the next run continues. At the end of each phase faults stop, no new events are "
                  "released, ingest catches up and enrichment drains; then the checks read Postgres, the queues, S3 and "
                  "`/_sim/stats`. Waits caused by the absurd headers are ended by the campaign (it sets the stored "
                  "`next_poll_at` and `retry_after_until` to now) after their length is measured. Polls the capture "
                  f"planner scheduled further than the campaign waits were brought forward "
                  f"({getattr(self, 'polls_brought_forward', 0)} times). Leases of enrich "
                  f"functions it killed are ended the same way instead of waiting 300 s ({getattr(self, 'lease_ended', 0)} "
                  "in the Lambda phase); the outbox sweep of the next ingest invocation must then send those push "
                  "events again.")
        md.append(f"- Logs of every process: `{self.work.relative_to(REPO) if self.work.is_relative_to(REPO) else self.work}/logs/`.")
        text = "\n".join(md) + "\n"
        out = Path(self.args.doc)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(text)
        return all(c[1] == "ok" for c in checks)

    def snapshot_served(self):
        (self.work / "served").mkdir(exist_ok=True)
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                for phase, sim in list(self.sims.items()):
                    try:
                        ids = list(sim.stats()["served_ids"])
                        (self.work / "served" / f"{phase}-{time.time():.3f}.json").write_text(json.dumps(ids))
                    except Exception:
                        pass
                stop.wait(3)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return stop

    def main(self):
        started = time.time()
        self.built_from = (
            subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip(),
        )
        self.sims, self.releasers, self.wait_clamp = {}, [], {}
        self.pg = Postgres(free_port())
        self.ls = None
        self.pg.start()
        log(f"postgres on {self.pg.port}")
        stop_snap = self.snapshot_served()
        ok = False
        try:
            try:
                self.phase_cli()
                log("cli phase done")
            except Exception as e:  # reported as a failed check; the other phase still runs
                self.problems.append(f"cli phase stopped: {type(e).__name__}: {e}")
                log(f"cli phase stopped: {e!r}")
            if not self.args.no_lambda:
                self.ls = LocalStack(os.environ["LOCALSTACK_VENV_BIN"], free_port(), self.work)
                self.ls.start()
                log(f"localstack on {self.ls.port}")
                try:
                    self.phase_lambda()
                    log("lambda phase done")
                except Exception as e:
                    self.problems.append(f"lambda phase stopped: {type(e).__name__}: {e}")
                    log(f"lambda phase stopped: {e!r}")
            self.check()
            stop_snap.set()
            ok = self.report(time.time() - started)
        finally:
            stop_snap.set()
            for r in self.releasers:
                r.done.set()
            for sim in self.sims.values():
                sim.stop()
            if self.ls:
                self.ls.stop()
            self.pg.stop()
        log(f"done in {time.time() - started:.0f} s: {'all checks ok' if ok else 'some checks FAILED'}")
        return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--short", action="store_true", help="about a third of the kills (CI)")
    ap.add_argument("--no-lambda", action="store_true", help="skip the lambda phase (no LocalStack)")
    ap.add_argument("--work", default=str(REPO / "target" / "campaign"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "reliability.md"), help="where the report goes")
    args = ap.parse_args()
    # SIGTERM (CI's time limit, a user's kill) unwinds like Ctrl-C, so the clean-up stops the
    # PostgreSQL cluster, LocalStack and github-sim it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(Campaign(args).main())


if __name__ == "__main__":
    main()
