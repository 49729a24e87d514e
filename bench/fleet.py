"""The dashboard under a fleet: N simulated agents at R distinct events/s each, on either engine.

    .venv/bin/python -m bench.fleet [--agents 50] [--rates 100,300] [--seconds 30] [--rounds 3]
                                    [--engines sqlite,postgres] [--json FILE]
    .venv/bin/python -m bench.fleet --url http://127.0.0.1:8000 [--url URL ...] --password PW [...]

Each agent speaks the agent protocol over /ws/agent/ with a token from `manage.py enrol`
(tests/fleet.py: hello, policy ack, heartbeats every 2 s, a batch of what it made every
50 ms, at most 20,000 events unacknowledged, as monitor/uplink.py sends); every event is a
connection to a destination of its own (a row each, every 10th an alert with its
violation). Meanwhile a browser's Connections feed, unfiltered, is open on the first
dashboard process.

Without --url the bench runs the dashboard itself, a fresh database for every step, and
interleaves the arms round by round (engine x rate, the order reversed every other round):

  sqlite    one daphne on SQLite (WAL) with the in-memory channel layer: `make run`'s web
            process (without the local agent, alerts and pruner)
  postgres  two daphnes sharing PostgreSQL and Redis (README "Many nodes"), agents spread
            over both; --database-url / --redis-url, by default the test services'
            (CROSSEDGE_TEST_DATABASE_URL, CROSSEDGE_TEST_REDIS_URL: scripts/test-services.sh).
            That database is emptied: never point it at one you keep.

With --url it loads dashboard processes that already run, spreading the agents over them,
and enrols its nodes with `manage.py enrol` in this environment (set DATABASE_URL as the
dashboard has it); --password is the admin's, for the feed.

Per step, over the load after --warm seconds (connections opened, first batches through):

  offered/s   events the agents made a second
  stored/s    events the dashboard acknowledged as stored a second
  ack p50/p99 from each event's making to the ack that covers it (the agent's 50 ms of
              gathering included)
  drain_s     after the load, until every event was acknowledged
  feed p50/99 from each event's making to its row's arrival in the browser's feed
  feed rows   rows the feed showed, of those stored (a resync after dropped updates
              brings at most the newest 1,000)
  web cores   the daphnes' CPU (cores) over the load; db cores: PostgreSQL's and Redis's
              (every process of theirs on the machine); bench cores: this process's own
  stored once rows stored == distinct (node, seq) == events made (checked in the database)
  closed      connections the dashboard closed (agents, feed); failures: daphne log lines
              with an exception or error

Medians over rounds are printed per arm. Run it alone on the machine (it takes the bench lock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.fleet import ADMIN_PASSWORD, Dashboard, FeedWatch, SimAgent, login_cookie, percentile

from .alone import alone
from .pipeline import cpu_seconds

ENGINES = {"sqlite": 1, "postgres": 2}  # engine -> daphne processes
SERVERS = (b"postgres", b"redis-server")  # the processes "db cores" counts


def servers() -> list[int]:
    """PostgreSQL's and Redis's processes on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_bytes().strip() in SERVERS:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Running:
    """Dashboard processes started elsewhere (--url): nothing to start, stop or empty."""

    def __init__(self, bases: list[str], tmp: Path):
        self.bases, self.procs = bases, []
        self.dashboard = Dashboard({}, tmp)

    def enrol(self, names):
        return self.dashboard.enrol(names)

    def stored(self, names):
        return self.dashboard.stored(names)

    def pids(self):
        return []

    def failures(self):
        return []


async def load(bases, tokens, rate, seconds, warm, password, drain) -> dict:
    """The agents and the feed for one step; the figures of the step."""
    agents = [SimAgent(bases[i % len(bases)], name, token, rate, i) for i, (name, token) in enumerate(tokens.items())]
    feed = FeedWatch(bases[0], login_cookie(bases[0], "admin", password), "connections")
    stop = asyncio.Event()
    watching = asyncio.create_task(feed.run(stop))
    await asyncio.wait_for(feed.ready.wait(), 60)
    start = time.monotonic()
    running = [asyncio.create_task(agent.run(seconds, drain)) for agent in agents]
    await asyncio.sleep(warm)
    stored_at_warm, measured_from = sum(a.stored for a in agents), time.monotonic()
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
    stored_at_end, measured = sum(a.stored for a in agents), time.monotonic() - measured_from
    await asyncio.gather(*running)
    drained = time.monotonic() - (start + seconds)
    await asyncio.sleep(2)  # the feed's last rows
    stop.set()
    await watching
    made = sum(a.made for a in agents)
    # events made after the warm-up: each agent's latencies are in the order of its events
    acks = [x for a in agents for x in a.ack_latency[int(a.rate * warm) :]]
    shown = [x for x, at in zip(feed.latency, feed.latency_at, strict=True) if at >= measured_from]
    return {
        "offered_per_s": round(made / seconds),
        "stored_per_s": round((stored_at_end - stored_at_warm) / measured),
        "ack_p50_s": round(percentile(acks, 0.5), 3),
        "ack_p99_s": round(percentile(acks, 0.99), 3),
        "drain_s": round(drained, 1),
        "feed_p50_s": round(percentile(shown, 0.5), 3),
        "feed_p99_s": round(percentile(shown, 0.99), 3),
        "feed_rows": sum(feed.rows[name] for name in tokens),
        "feed_resyncs": feed.resyncs,
        "made": made,
        "acked_stored": sum(a.stored for a in agents),
        "closed": {a.name: a.closed for a in agents if a.closed} | ({"feed": feed.closed} if feed.closed else {}),
        "errors": sum(len(a.errors) for a in agents),
    }


def step(engine, args, rate, tmp_root: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=tmp_root))
    if args.url:
        stack = Running(args.url, tmp)
    else:
        env = {"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url} if engine == "postgres" else {}
        stack = Dashboard(env, tmp, ENGINES[engine])
        stack.prepare()
    names = [f"fleet-{uuid.uuid4().hex[:6]}-{i}" for i in range(args.agents)]
    tokens = stack.enrol(names)
    try:
        if not args.url:
            stack.start()
        pids = stack.pids()
        cpu_before, db_before = sum(map(cpu_seconds, pids)), {pid: cpu_seconds(pid) for pid in servers()}
        bench_before, t0 = time.process_time(), time.monotonic()
        password = args.password or ADMIN_PASSWORD
        row = asyncio.run(load(stack.bases, tokens, rate, args.seconds, args.warm, password, args.drain))
        took = time.monotonic() - t0
        row["web_cores"] = round((sum(map(cpu_seconds, pids)) - cpu_before) / took, 2)
        # (the database's backends for the daphnes' connections start during the load: from 0)
        row["db_cores"] = round(sum(cpu_seconds(pid) - db_before.get(pid, 0) for pid in servers()) / took, 2)
        row["bench_cores"] = round((time.process_time() - bench_before) / took, 2)
    finally:
        if not args.url:
            stack.stop()
    counts = stack.stored(names)
    row["stored_once"] = (
        all(rows == seqs for rows, seqs in counts.values()) and sum(rows for rows, _ in counts.values()) == row["made"]
    )
    row["failures"] = len(stack.failures())
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"engine": engine if not args.url else "running", "agents": args.agents, "rate": rate} | row


COLUMNS = ["engine", "agents", "rate", "offered_per_s", "stored_per_s", "ack_p50_s", "ack_p99_s", "drain_s",
           "feed_p50_s", "feed_p99_s", "feed_rows", "feed_resyncs", "web_cores", "db_cores", "bench_cores",
           "stored_once", "failures"]  # fmt: skip
NUMERIC = COLUMNS[3:-2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rates", default="100,300", help="events/s of each agent, comma separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per step")
    parser.add_argument("--warm", type=float, default=5.0, help="seconds of each load left out of the figures")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last acks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgres", help=f"of {', '.join(ENGINES)}")
    parser.add_argument("--database-url", default=os.environ.get("CROSSEDGE_TEST_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("CROSSEDGE_TEST_REDIS_URL"))
    parser.add_argument("--url", action="append", help="a running dashboard process (repeat for several)")
    parser.add_argument("--password", help="with --url: the admin's password (for the browser feed)")
    parser.add_argument("--keep", action="store_true", help="keep each step's directory (daphne logs, SQLite)")
    parser.add_argument("--json", metavar="FILE", help="also write every step as JSON")
    args = parser.parse_args(argv)
    engines = ["running"] if args.url else args.engines.split(",")
    if "postgres" in engines and not (args.database_url and args.redis_url):
        parser.error('postgres needs --database-url and --redis-url (or eval "$(scripts/test-services.sh)")')
    if args.url and not args.password:
        parser.error("--url needs --password (the admin's, for the browser feed)")
    rates = [float(r) for r in args.rates.split(",")]
    arms = [(engine, rate) for rate in rates for engine in engines]
    tmp_root = Path(tempfile.mkdtemp(prefix="crossedge-bench-fleet-"))
    steps = []
    try:
        for round_ in range(args.rounds):
            for engine, rate in arms if round_ % 2 == 0 else reversed(arms):
                steps.append(step(engine, args, rate, tmp_root))
                print(f"round {round_ + 1}: {json.dumps(steps[-1])}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp_root, ignore_errors=True)
    print(f"\nthe dashboard under {args.agents} simulated agents, {args.seconds:g} s a step "
          f"({args.warm:g} s warm-up left out), medians of {args.rounds} interleaved rounds:")  # fmt: skip
    print("".join(f"{c:>14}" for c in COLUMNS))
    summary = []
    for engine, rate in arms:
        rows = [s for s in steps if (s["engine"], s["rate"]) == (engine, rate)]
        row = {"engine": engine, "agents": args.agents, "rate": int(rate)}
        row |= {c: round(statistics.median(r[c] for r in rows), 3) for c in NUMERIC}
        row |= {"stored_once": all(r["stored_once"] for r in rows), "failures": sum(r["failures"] for r in rows)}
        summary.append(row)
        print("".join(f"{row[c]!s:>14}" for c in COLUMNS))
    closed = [s["closed"] for s in steps if s["closed"]]
    if closed:
        print(f"connections the dashboard closed: {closed}")
    if args.json:
        Path(args.json).write_text(json.dumps({"arms": summary, "steps": steps}, indent=2))
    return 1 if closed or not all(r["stored_once"] for r in summary) else 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
