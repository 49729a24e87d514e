"""A simulated fleet on loopback, for the scale-path tests and bench/fleet.py: the dashboard's
web processes (one daphne on SQLite, or several sharing PostgreSQL and Redis), agents that
speak the agent protocol (monitor/protocol.py) with tokens from `manage.py enrol`, and
browser feeds signed in as a person.

An agent here is the uplink's side of the wire without the kernel and the spool: it makes
`rate` distinct connection events a second, gathers them for FLUSH seconds and sends them
as one batch (monitor/uplink.py does the same), keeps at most WINDOW events unacknowledged,
answers policy pushes and heartbeats. It never reconnects: a connection the dashboard
closes is recorded (code, reason, when), which is what a test of the scale path asserts on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from array import array
from datetime import datetime
from pathlib import Path

import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from monitor.protocol import AGENT_PATH, HEARTBEAT_SECONDS, MAX_BATCH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[1]
FLUSH = 0.05  # seconds an agent gathers events before it sends them (monitor/uplink.py's flush_interval)
WINDOW = 20 * MAX_BATCH  # events sent and not yet acknowledged, at most (the uplink's window)
ADMIN_PASSWORD = "pw-fleet-admin-1"
# What daphne logs when a consumer or the server fails: none of it may appear under load.
FAILURES = re.compile(r"Traceback|Exception|Error|ERROR|CRITICAL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login_cookie(base: str, username: str, password: str) -> str:
    """A browser's session cookie, signed in through the login page (CSRF and all)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/accounts/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    opener.open(urllib.request.Request(base + "/accounts/login/", data=body.encode()), timeout=30)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    if "sessionid=" not in cookie:
        raise RuntimeError(f"could not sign in to {base} as {username}")
    return cookie


class Dashboard:
    """`processes` daphnes on one database (with REDIS_URL in env, one channel layer too), as the
    README's "Many nodes" runs them; each logs to a file of its own under `tmp`."""

    def __init__(self, env: dict, tmp: Path, processes: int = 1):
        self.env = {**os.environ, "CROSSEDGE_VAR_DIR": str(tmp), "CROSSEDGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
        self.tmp, self.ports = tmp, [free_port() for _ in range(processes)]
        self.procs: list[subprocess.Popen] = []

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def manage(self, *args: str, timeout: float = 300) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout).stdout  # fmt: skip

    def prepare(self) -> None:
        """Migrated, emptied (a shared PostgreSQL keeps what earlier runs stored; Redis keeps
        the groups of every daphne that was killed, whose channels fill up and cost every
        message sent to the group for a day) and with an admin."""
        self.manage("migrate", "--noinput")
        if self.env.get("DATABASE_URL"):
            self.manage("flush", "--noinput")
        if self.env.get("REDIS_URL"):
            redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.manage("ensureadmin")

    def enrol(self, names: list[str]) -> dict[str, str]:
        """name -> token, from `manage.py enrol` (one process for all of them)."""
        lines = self.manage("enrol", *names).splitlines()
        if len(names) == 1:
            return {names[0]: lines[-1].strip()}
        return dict(line.rsplit(" ", 1) for line in lines if line.strip())

    def log(self, index: int) -> Path:
        return self.tmp / f"daphne-{index}.log"

    def start(self) -> None:
        for i, port in enumerate(self.ports):
            with open(self.log(i), "ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"],
                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        deadline = time.monotonic() + 60
        for proc, port in zip(self.procs, self.ports, strict=True):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"daphne on port {port} did not come up: {self.logs()[-2000:]}") from None
                    time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def logs(self) -> str:
        return "".join(self.log(i).read_text(errors="replace") for i in range(len(self.ports)) if self.log(i).exists())

    def failures(self) -> list[str]:
        """The lines of the daphnes' logs that tell of a failure (a consumer's exception, say)."""
        return [line for line in self.logs().splitlines() if FAILURES.search(line)]

    def stored(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """node name -> (connection rows, distinct sequence numbers) stored for it."""
        code = (
            "import json; from django.db.models import Count; "
            "from dashboard.events.models import ConnectionEvent as E; "
            f"q = E.objects.filter(node__name__in={names!r}).values('node__name')"
            ".annotate(r=Count('id'), s=Count('seq', distinct=True)); "
            "print(json.dumps({x['node__name']: [x['r'], x['s']] for x in q}))"
        )
        counts = json.loads(self.manage("shell", "--no-imports", "-c", code).splitlines()[-1])
        return {name: tuple(counts.get(name, (0, 0))) for name in names}


def connect_event(seq: int, index: int, made_ns: int, container: dict, alert: bool) -> dict:
    """A connection event as the agent's pipeline emits it, to a destination of its own."""
    k = seq + index * 1_000_003
    return {
        "seq": seq, "kind": "connect", "ts_ns": made_ns, "pid": 4000 + seq % 1000, "tid": 4000 + seq % 1000,
        "uid": 0, "gid": 0, "cgroup_id": 10_000 + index, "cgroup_path": container["cgroup_path"],
        "family": 4, "dest_ip": f"127.{64 + k // 65536 % 64}.{k // 256 % 256}.{k % 256}", "dest_port": 20000 + k % 50,
        "result": -111, "comm": "fleet-app", "container": container["container"], "op": "connect",
        "verdict": "alert" if alert else "allow", "rule_id": "fleet-watch" if alert else "",
        "severity": "medium" if alert else "", "policy_version": 1,
    }  # fmt: skip


class SimAgent:
    """One node's agent: see the module's docstring. Figures: `made`, `stored` (as the acks
    say), `acked` (the highest number acknowledged), `ack_latency` (seconds from each event's
    making to the ack that covers it), `closed` ((code, reason, seconds after connecting) when
    the dashboard closed the connection), `errors` (the dashboard's error messages)."""

    def __init__(self, base: str, name: str, token: str, rate: float, index: int, alert_every: int = 10):
        self.url = base.replace("http", "ws", 1) + AGENT_PATH
        self.name, self.token, self.rate, self.index, self.alert_every = name, token, rate, index, alert_every
        cid = f"{index:08x}" * 8
        self.container = {
            "cgroup_path": f"/system.slice/docker-{cid}.scope",
            "container": {"runtime": "docker", "id": cid, "name": f"fleet-app-{index}", "pod_uid": "",
                          "image": "fleet/app:1", "labels": {"app": "fleet"}},
        }  # fmt: skip
        self.made = self.stored = self.acked = self.sent = 0
        self.ack_latency = array("d")
        self.queue: collections.deque[dict] = collections.deque()  # made, not sent
        self.made_at: collections.deque[tuple[int, float]] = collections.deque()  # (seq, monotonic), not acked
        self.closed: tuple[int | None, str, float] | None = None
        self.errors: list[str] = []
        self.connected_at = 0.0
        self.acks = asyncio.Event()

    async def run(self, seconds: float, drain: float = 60.0) -> None:
        """Connect, make events for `seconds`, then wait up to `drain` s for every ack; close."""
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with connect(self.url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES,
                               open_timeout=60) as ws:  # fmt: skip
                self.connected_at = time.monotonic()
                node = {"hostname": self.name, "kernel": "sim", "agent_version": "sim"}
                await ws.send(json.dumps({"type": "hello", "v": PROTOCOL_VERSION, "node": node}))
                welcome = json.loads(await ws.recv())
                if welcome.get("type") != "welcome":
                    raise RuntimeError(f"{self.name}: expected a welcome, got {welcome}")
                await self._policy(ws, welcome.get("policy") or {})
                tasks = [asyncio.create_task(c) for c in (self._receive(ws), self._beat(ws))]
                try:
                    await self._make_and_send(ws, seconds, drain)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        except ConnectionClosed as exc:
            self._record_close(exc)

    def _record_close(self, exc: ConnectionClosed) -> None:
        if self.closed is None:
            rcvd = exc.rcvd
            since = time.monotonic() - self.connected_at
            self.closed = (rcvd.code if rcvd else None, rcvd.reason if rcvd else str(exc), round(since, 1))

    async def _make_and_send(self, ws, seconds: float, drain: float) -> None:
        start = time.monotonic()
        while (now := time.monotonic()) < start + seconds:
            due = int((now - start) * self.rate) - self.made
            made_ns = time.time_ns()
            for _ in range(max(0, due)):
                self.made += 1
                alert = self.alert_every > 0 and self.made % self.alert_every == 0
                self.queue.append(connect_event(self.made, self.index, made_ns, self.container, alert))
                self.made_at.append((self.made, now))
            await self._send(ws)
            await asyncio.sleep(FLUSH)
        deadline = time.monotonic() + drain
        while self.acked < self.made and time.monotonic() < deadline:
            await self._send(ws)
            self.acks.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acks.wait(), 1.0)

    async def _send(self, ws) -> None:
        while self.queue and self.sent - self.acked < WINDOW:
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_BATCH))]
            await ws.send(json.dumps({"type": "events", "batch": batch}))
            self.sent = batch[-1]["seq"]

    async def _receive(self, ws) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "ack":
                    now, seq = time.monotonic(), int(msg["seq"])
                    self.stored += msg.get("stored", 0)
                    self.acked = max(self.acked, seq)
                    while self.made_at and self.made_at[0][0] <= seq:
                        self.ack_latency.append(now - self.made_at.popleft()[1])
                    self.acks.set()
                elif msg.get("type") == "policy":
                    await self._policy(ws, msg)
                elif msg.get("type") == "error":
                    self.errors.append(str(msg.get("reason")))
        except ConnectionClosed as exc:
            self._record_close(exc)
            raise

    async def _policy(self, ws, policy: dict) -> None:
        if isinstance(policy.get("version"), int):
            await ws.send(json.dumps({"type": "policy_ack", "version": policy["version"], "error": ""}))

    async def _beat(self, ws) -> None:
        while True:
            health = {"outbox": len(self.queue), "unacked": self.sent - self.acked, "spool": self.made - self.acked}
            await ws.send(json.dumps({"type": "heartbeat", "health": health}))
            await asyncio.sleep(HEARTBEAT_SECONDS)


class FeedWatch:
    """A browser's live feed (`/ws/feed/<feed>/`): the rows it shows, each row's latency from
    its event's time to its arrival here, the resyncs announced, and whether it was closed."""

    def __init__(self, base: str, cookie: str, feed: str = "connections"):
        self.base, self.cookie, self.feed = base, cookie, feed
        self.rows: collections.Counter[str] = collections.Counter()  # node name -> rows shown
        self.latency = array("d")  # seconds from the event's time to the row's arrival (live rows only)
        self.latency_at = array("d")  # monotonic time of each of those arrivals
        self.arrivals = array("d")  # monotonic time of each live message
        self.resyncs = 0
        self.closed: tuple[int | None, str] | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        url = self.base.replace("http", "ws", 1) + f"/ws/feed/{self.feed}/"
        headers = {"Cookie": self.cookie, "Origin": self.base}
        try:
            async with connect(url, additional_headers=headers, max_size=None, open_timeout=60) as ws:
                reader = asyncio.create_task(self._read(ws))
                await asyncio.wait([reader, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await reader
        except ConnectionClosed as exc:
            self.closed = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else str(exc))

    async def _read(self, ws) -> None:
        try:
            async for raw in ws:
                now, arrived = time.time(), time.monotonic()
                msg = json.loads(raw)
                self.resyncs += msg["type"] == "resync"
                if msg["type"] == "backfill":
                    self.ready.set()
                    continue
                self.arrivals.append(arrived)
                for row in msg["rows"]:
                    self.rows[row["node"]] += 1
                    if msg["type"] == "rows":
                        self.latency.append(now - datetime.fromisoformat(row["ts"]).timestamp())
                        self.latency_at.append(arrived)
        except ConnectionClosed as exc:
            self.closed = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else str(exc))
            self.ready.set()


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
