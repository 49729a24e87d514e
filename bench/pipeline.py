"""The whole pipeline under connect() load: what was generated, stored, delivered, lost.

    sudo .venv/bin/python -m bench.pipeline [--seconds 5] [--rates 1000,5000,20000,0] [--json FILE]
                                            [--flows 1,1000,0] [--rounds 3] [--trace-syscalls] [--idle 10]

Runs the product as `make run` does (daphne + the local agent, whose connect4/6 programs
observe the containers and enforce; SQLite, in-memory layer) in a temporary directory, with
one websocket subscriber on the connection feed. --trace-syscalls runs connect.bt as well
(host processes and connect() results), as `runagent --trace-syscalls` does.

For each number of flows and each rate (0 = flat out) a fresh container cgroup of ours
makes paced connects for --seconds: to a loopback listener (1 flow), cycling through N
distinct closed loopback (address, port) flows, or to a new flow at every call (0, a scan:
every call a row that agent, spool, uplink, database and feed must carry). Then the bench
waits for the pipeline to drain and reports, per step:

  generated   connects the load made (counted by the load itself)
  stored      connections stored for that container (the sum of the stored rows' counts)
  rows        rows stored for them, and rows/s of load (repeats of a flow are counted in the
              kernel, not sent one by one, so rows follow distinct flows, not calls)
  drain_s     seconds from the load's end until everything was stored
  delivered   of those, connections the websocket subscriber received (a row counts its count)
  lost        what the node reports lost in the step (kernel buffers, agent queue, spool cap)
  unaccounted generated - stored - lost (must be 0)
  p50/p99     latency of every delivered call from its own time (the load stamps each call)
              to the subscriber's receipt of the row that carries it: folded calls included
  CPU         agent (with its tracers) and dashboard CPU seconds per second of load
  peak RSS    agent and dashboard high-water marks
  overview    the slowest overview page load while the load ran (a user reloading it)

and flat-out connect() throughput with CrossEdge running as a ratio of the same load with
CrossEdge stopped: --rounds pairs, the arms interleaved (without, start, with, stop, ...,
without), each after a second of untimed load, medians compared; and (--idle) each
process's CPU while the node is quiet, right after each start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from monitor.testbed import SimulatedContainer

from .alone import alone
from .loopback import start_listener

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
LOAD = r"""
import socket, struct, sys, time
from array import array
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
flows, first, stamps_file, warm = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], float(sys.argv[8])
linger = struct.pack("ii", 1, 0)
stamps = array("d")  # each call's own wall time: the latency of a folded call counts from it


def dest(k):  # as destination() in bench/pipeline.py: many addresses and ports, closed ones
    return (host, port) if flows == 1 else (f"127.64.{k // 50 // 256 % 256}.{k // 50 % 256}", 20000 + k % 50)


def call(k):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex(dest(k))
    s.close()


k, end = first + WARM_OFFSET, time.perf_counter() + warm
while time.perf_counter() < end:  # untimed, flat out, to destinations the timed calls do not reach
    call(k)
    k += 1
n, start, cpu = 0, time.perf_counter(), time.process_time()
end = start + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate and n >= (now - start) * rate:
        time.sleep(min(0.001, end - now))
        continue
    stamps.append(time.time())
    call(first + (n % flows if flows else n))
    n += 1
with open(stamps_file, "wb") as fh:
    stamps.tofile(fh)
print(n, time.perf_counter() - start, time.process_time() - cpu, flush=True)
"""
WORKER_SPAN = 1_000_000  # each worker's flows: first = worker * WORKER_SPAN
WARM = 1.0  # seconds each throughput arm's load runs untimed first: the arms follow a start, a stop, an idle
# measure, whose after-effects would otherwise fall on one arm (the first calls after a quiet spell run slower)
WARM_OFFSET = 500_000  # a worker's warm-up calls go to its flows from first + WARM_OFFSET on
LOAD = f"WARM_OFFSET = {WARM_OFFSET}\n" + LOAD


def destination(k: int) -> tuple[str, int]:
    """The load's k-th distinct flow (closed loopback ports: the call fails fast, still judged)."""
    return f"127.64.{k // 50 // 256 % 256}.{k // 50 % 256}", 20000 + k % 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its reaped children (its tracers run as children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / CLK


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for c in out for p in tree(int(c))]


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            m = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def drain(read, generated: int, quiet: float = 10, limit: float = 300) -> None:
    """Wait until `read()` -> (stored, lost) accounts for `generated`, or nothing changed for
    `quiet` seconds (what is then missing is reported as unaccounted), then a second more."""
    deadline, last = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        now = read()
        if sum(now) >= generated or (last and last[0] == now and time.monotonic() - last[1] > quiet):
            break
        if not last or last[0] != now:
            last = (now, time.monotonic())
        time.sleep(0.5)
    time.sleep(1)


class Product:
    def __init__(self, tmp: Path, parent: str, trace_syscalls: bool = False):
        self.tmp, self.port = tmp, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.pins = f"/sys/fs/bpf/crossedge-bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "CROSSEDGE_VAR_DIR": str(tmp),
            "CROSSEDGE_ADMIN_PASSWORD": "pw-bench-pipeline",
            "CROSSEDGE_ENFORCE_SCOPE": f"/{parent}/*",
            "CROSSEDGE_PIN_ROOT": self.pins,
            "CROSSEDGE_DOCKER_ROOTS": str(tmp / "docker"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "CROSSEDGE_TRACE_SYSCALLS": "1" if trace_syscalls else "",
        }
        self.proc = None

    def manage(self, *args) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    def prepare(self) -> None:
        """Its database, its admin, and an API token for the bench (before the first start)."""
        self.manage("migrate", "--noinput")
        self.manage("ensureadmin")
        self.key = self.manage("apitoken", "admin", "bench").strip()

    def start(self) -> None:
        log = open(self.tmp / "up.log", "a")  # noqa: SIM115 (lives as long as the product)
        self.proc = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(self.port)], cwd=ROOT,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.node():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the product did not come up: " + (self.tmp / "up.log").read_text()[-2000:])
            time.sleep(0.5)
        time.sleep(3)  # the tracers attach

    def stop(self) -> None:
        """Stop the product and remove its pins, even when it is slow to stop (it once took
        over a minute after a load, and the pins stayed attached)."""
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    for pid in reversed(tree(self.proc.pid)):  # ours: the product and its children
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    self.proc.wait(30)
        finally:
            done = subprocess.run([sys.executable, "manage.py", "runagent", "--uninstall", "--pin-root", self.pins],
                                  cwd=ROOT, env=self.env, capture_output=True, text=True)  # fmt: skip
            if done.returncode:
                print(f"could not remove {self.pins}: {done.stderr[-500:]}", file=sys.stderr)

    def api(self, path: str):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Token {self.key}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def node(self) -> dict | None:
        try:
            rows = self.api("/api/nodes/")["results"]
        except OSError:
            return None
        return rows[0] if rows and rows[0]["status"] == "online" else None

    def node_health(self) -> dict:
        code = (
            "from dashboard.fleet.models import Node; import json; "
            "print(json.dumps(Node.objects.order_by('pk').first().health))"
        )
        return json.loads(self.manage("shell", "--no-imports", "-c", code).splitlines()[-1])

    def pids(self) -> dict[str, list[int]]:
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        found = {"agent": [], "dashboard": []}
        for pid in map(int, children):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            found["agent" if b"runagent" in cmd else "dashboard"] += tree(pid)
        return found

    def roles(self) -> dict[str, list[int]]:
        """The product's processes by what they do (each with its children: the agent's readers)."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        found: dict[str, list[int]] = {}
        for pid in map(int, children):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            role = next((r for r in ("runagent", "daphne", "alerts", "prune") if r.encode() in argv), "other")
            found.setdefault(role, []).extend(tree(pid))
        return found

    def stored(self, container: str) -> tuple[int, int]:
        """(connections, rows) stored for the container."""
        code = (
            "from django.db.models import Count, Sum; from dashboard.events.models import ConnectionEvent as E; "
            f"a = E.objects.filter(container__name={container!r}).aggregate(n=Sum('count'), r=Count('id')); "
            "print(a['n'] or 0, a['r'])"
        )
        n, rows = self.manage("shell", "--no-imports", "-c", code).split()[-2:]
        return int(n), int(rows)

    def session_cookie(self) -> str:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(self.base + "/accounts/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "admin",
                                       "password": "pw-bench-pipeline"})  # fmt: skip
        opener.open(urllib.request.Request(self.base + "/accounts/login/", data=body.encode()))
        return "; ".join(f"{c.name}={c.value}" for c in jar)


class Subscriber(threading.Thread):
    """One browser's connection feed: per container, the connections delivered and each
    row's flow, count, event time and time of receipt."""

    def __init__(self, product: Product):
        super().__init__(daemon=True)
        self.product, self.rows, self.seen, self.gaps = product, {}, {}, 0
        self.ready = threading.Event()

    def run(self):
        try:
            asyncio.run(self._run())
        except (OSError, ConnectionClosed):
            pass  # the product stopped: the counts so far are the result

    async def _run(self):
        url = f"ws://127.0.0.1:{self.product.port}/ws/feed/connections/"
        headers = {"Cookie": self.product.session_cookie(), "Origin": self.product.base}
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            self.ready.set()
            async for raw in ws:
                now = time.time()
                msg = json.loads(raw)
                self.gaps += msg["type"] == "resync"
                for row in msg["rows"]:
                    name = (row.get("container") or {}).get("name", "host")
                    count = row.get("count", 1)
                    self.rows[name] = self.rows.get(name, 0) + count
                    ts = datetime.fromisoformat(row["ts"]).timestamp()
                    self.seen.setdefault(name, []).append((row["dest_ip"], row["dest_port"], count, ts, now))


class PageProbe(threading.Thread):
    """A person reloading the overview during the load: the slowest answer counts."""

    def __init__(self, product: Product, cookie: str):
        super().__init__(daemon=True)
        self.product, self.cookie, self.times, self.stop = product, cookie, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            start = time.perf_counter()
            req = urllib.request.Request(self.product.base + "/", headers={"Cookie": self.cookie})
            try:
                urllib.request.urlopen(req, timeout=30).read()
                self.times.append(time.perf_counter() - start)
            except OSError:
                self.times.append(30.0)
            self.stop.wait(0.5)


@dataclass
class Load:
    generated: int
    took: float
    cpu: float  # the load processes' own CPU seconds (their calls' cost, whatever else ran)
    calls: dict[tuple[str, int], list[float]]  # flow -> its calls' wall times, in order


def load(
    container: SimulatedContainer,
    port: int,
    rate: float,
    seconds: float,
    workers: int,
    flows: int = 1,
    first: int = 0,
    warm: float = 0.0,
) -> Load:
    """Paced connects from `workers` processes; flows: 1 = the listener, N = N distinct
    (address, port) flows per worker, cycled, 0 = every call a flow of its own (from the
    `first`-th destination on). `warm` seconds of untimed flat-out calls come first (the
    first calls after a quiet spell run slower: a measure that follows one would be low)."""
    per = rate / workers if rate else 0
    stamps = [tempfile.NamedTemporaryFile(suffix=".stamps") for _ in range(workers)]  # noqa: SIM115
    argv = [sys.executable, "-c", LOAD, "127.0.0.1", str(port), str(per), str(seconds), str(flows)]
    procs = [container.spawn([*argv, str(first + w * WORKER_SPAN), stamps[w].name, str(warm)], stdout=subprocess.PIPE,
                             text=True) for w in range(workers)]  # fmt: skip
    results = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    calls: dict[tuple[str, int], list[float]] = {}
    for w, fh in enumerate(stamps):
        times = array("d")
        times.frombytes(fh.read())
        fh.close()
        for n, t in enumerate(times):
            flow = (
                ("127.0.0.1", port)
                if flows == 1
                else destination(first + w * WORKER_SPAN + (n % flows if flows else n))
            )
            calls.setdefault(flow, []).append(t)
    for times in calls.values():  # two workers' calls of one flow interleave
        times.sort()
    return Load(sum(int(n) for n, _, _ in results), max(float(t) for _, t, _ in results),
                sum(float(c) for _, _, c in results), calls)  # fmt: skip


def call_latencies(calls: dict[tuple[str, int], list[float]], rows: list[tuple]) -> list[float]:
    """Each delivered call's latency from its own time: a flow's rows, in event-time order,
    stand for its calls in order (a row with count n for the next n)."""
    by_flow: dict[tuple[str, int], list[tuple]] = {}
    for row in rows:
        by_flow.setdefault((row[0], row[1]), []).append(row)
    out = []
    for flow, frows in by_flow.items():
        times, i = calls.get(flow, []), 0
        for _ip, _port, count, _ts, received in sorted(frows, key=lambda r: (r[3], r[4])):
            out += [max(0.0, received - t) for t in times[i : i + count]]
            i += count
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def cores_during(product: Product, work):
    """(work's result, {role: cores each of the product's processes used while it ran})."""
    roles = product.roles()
    before, start = {r: sum(map(cpu_seconds, pids)) for r, pids in roles.items()}, time.monotonic()
    result = work()
    took = time.monotonic() - start
    return result, {r: round((sum(map(cpu_seconds, pids)) - before[r]) / took, 4) for r, pids in roles.items()}


def idle_cpu(product: Product, seconds: float) -> dict[str, float]:
    """Cores each of the product's processes uses while nothing happens on the node: what an
    edge node pays for being watched when its containers are quiet."""
    return cores_during(product, lambda: time.sleep(seconds))[1]


def measure_step(product, subscriber, pids, c, name, port, rate, flows, seconds) -> dict:
    """One load on a fresh container, drained; the row of the report."""
    lost_at_start = product.node()["lost"]
    lost_before = sum(lost_at_start.values())
    cpu_before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    probe = PageProbe(product, product.session_cookie())
    probe.start()
    result = load(c, port, rate, seconds, 1 if 0 < rate <= 5000 else 2, flows)
    probe.stop.set()
    probe.join()
    cpu = {k: (sum(cpu_seconds(p) for p in v) - cpu_before[k]) / result.took for k, v in pids.items()}
    ended = time.monotonic()
    deadline, stored, rows, lost, last = ended + 300, -1, 0, 0, None
    while time.monotonic() < deadline:  # drain: until all is stored or counted lost, or 10 s without change
        stored, rows = product.stored(name)
        lost = sum(product.node()["lost"].values()) - lost_before
        if stored + lost >= result.generated or (last is not None and (stored, lost) == last[0]
                                                 and time.monotonic() - last[1] > 10):  # fmt: skip
            break
        if last is None or (stored, lost) != last[0]:
            last = ((stored, lost), time.monotonic())
        time.sleep(0.5)
    drained = time.monotonic() - ended
    time.sleep(1)
    stored, rows = product.stored(name)
    lost_now = product.node()["lost"]
    lost = sum(lost_now.values()) - lost_before
    where = {k: v - lost_at_start.get(k, 0) for k, v in lost_now.items() if v != lost_at_start.get(k, 0)}
    latencies = call_latencies(result.calls, subscriber.seen.get(name, []))
    return {
        "flows": {1: "1", 0: "all new"}.get(flows, f"{flows:,}"),
        "rate": rate or "flat out",
        "generated": result.generated,
        "achieved_per_s": round(result.generated / result.took),
        "stored": stored,
        "rows": rows,
        "rows_per_s": round(rows / result.took),
        "drain_s": round(drained, 1),
        "delivered": subscriber.rows.get(name, 0),
        "lost_counted": lost,
        "lost_where": where,
        "unaccounted": result.generated - stored - lost,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "agent_cpu": round(cpu["agent"], 2),
        "dashboard_cpu": round(cpu["dashboard"], 2),
        "agent_peak_mib": round(peak_rss_mib(pids["agent"])),
        "dashboard_peak_mib": round(peak_rss_mib(pids["dashboard"])),
        "overview_max_ms": round(max(probe.times, default=0) * 1000),
    }


COLUMNS = ["flows", "rate", "generated", "achieved_per_s", "stored", "rows", "rows_per_s", "drain_s", "delivered",
           "lost_counted", "unaccounted", "p50_ms", "p99_ms", "agent_cpu", "dashboard_cpu", "agent_peak_mib",
           "dashboard_peak_mib", "overview_max_ms"]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load per step")
    parser.add_argument("--rates", default="1000,5000,20000,0", help="connects/s, comma separated; 0 = flat out")
    parser.add_argument("--flows", default="1,1000,0",
                        help="distinct flows per load worker, comma separated; 0 = every call a new flow")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="interleaved without/with throughput pairs")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--trace-syscalls", action="store_true", help="run connect.bt too (runagent --trace-syscalls)")
    parser.add_argument("--throughput", default="1,0",
                        help="load shapes of the flat-out throughput arms: 1 = one flow, 0 = a scan (every call a "
                        "new flow), comma separated")  # fmt: skip
    parser.add_argument(
        "--idle",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="measure each process's CPU this long after each start, with no load (0: skip)",
    )
    parser.add_argument("--no-steps", action="store_true", help="measure the throughput arms only")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it runs the agent and makes cgroups")
    rates = [float(r) for r in args.rates.split(",")]
    flow_counts = [int(f) for f in args.flows.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-pipeline-"))
    tag = uuid.uuid4().hex[:8]
    parent = f"crossedge-bench-{tag}.slice"
    target, port = start_listener()
    product = Product(tmp, parent, args.trace_syscalls)
    made: list[SimulatedContainer] = []

    def container(name):
        made.append(SimulatedContainer(name, parent, str(tmp / "docker")).create())
        return made[-1]

    shapes = [int(f) for f in args.throughput.split(",")]
    scans = iter(range(1, 1000))  # each scan arm reaches destinations no arm reached before

    def flat_out(c, flows: int) -> tuple[float, float]:
        """Calls a second, and calls a second of the load's own CPU time."""
        first = 0 if flows == 1 else next(scans) * 50_000
        result = load(c, port, 0, 3, 2, 1 if flows == 1 else 0, first=first, warm=WARM)
        return result.generated / result.took, result.generated / result.cpu

    def arms() -> dict[int, tuple[float, float]]:
        return {shape: flat_out(flat, shape) for shape in shapes}

    baseline, with_product, steps, gaps, idle = [], [], [], 0, []
    try:
        product.prepare()
        flat = container("bench-flat")
        for round_ in range(args.rounds):  # without, with, without, with, ...: the arms interleaved
            baseline.append(arms())
            product.start()
            try:
                if args.idle:
                    idle.append(idle_cpu(product, args.idle))
                with_product.append(arms())
                if round_ == 0 and not args.no_steps:
                    subscriber = Subscriber(product)
                    subscriber.start()
                    subscriber.ready.wait(30)
                    pids = product.pids()
                    for flows in flow_counts:
                        for rate in rates:
                            name = f"bench-{flows}-{int(rate) or 'max'}-{len(steps)}"
                            steps.append(measure_step(product, subscriber, pids, container(name), name, port, rate,
                                                      flows, args.seconds))  # fmt: skip
                            print(f"step: {steps[-1]}", file=sys.stderr)
                    gaps = subscriber.gaps
            finally:
                product.stop()
        baseline.append(arms())
    finally:
        product.stop()
        for c in made:
            c.remove()
        target.kill()
        target.wait()

    def median(runs, shape, i):
        return statistics.median(r[shape][i] for r in runs)

    medians = {shape: (median(with_product, shape, 0), median(baseline, shape, 0)) for shape in shapes}
    per_cpu = {shape: median(with_product, shape, 1) / median(baseline, shape, 1) for shape in shapes}
    ratios = {shape: with_ / without for shape, (with_, without) in medians.items()}
    source = "connect4/6 programs" + (" + connect.bt" if args.trace_syscalls else "")
    print(f"\npipeline under loopback connect() load (agent: {source}, observing and enforcing; "
          "dashboard: SQLite, one subscriber)")  # fmt: skip
    print("".join(f"{c:>15}" for c in COLUMNS))
    for s in steps:
        print("".join(f"{str(s[c]):>15}" for c in COLUMNS))
    print(f"\nflat-out connect() throughput with CrossEdge / without ({args.rounds} interleaved pairs, medians):")
    for shape, (with_, without) in medians.items():
        what = "one flow" if shape == 1 else "a scan (every call a new flow)" if shape == 0 else f"{shape} flows"
        print(f"  {what}: {with_:,.0f} / {without:,.0f} per s = {ratios[shape]:.3f} (target >= 0.90); "
              f"per second of the load's own CPU time {per_cpu[shape]:.3f}")  # fmt: skip
    if idle:
        roles = sorted({r for round_ in idle for r in round_})
        share = {r: statistics.median(round_.get(r, 0.0) for round_ in idle) for r in roles}
        print(
            f"\nthe product idle ({args.idle:g} s after each start, medians of {len(idle)}), CPU cores: "
            + ", ".join(f"{r} {v:.3f}" for r, v in share.items())
            + f"; in all {sum(share.values()):.3f}"
        )
    result = {"steps": steps, "idle_cpu": idle, "throughput_ratio": {str(k): round(v, 3) for k, v in ratios.items()},
              "per_cpu_ratio": {str(k): round(v, 3) for k, v in per_cpu.items()},
              "baseline_per_s": baseline, "with_crossedge_per_s": with_product, "feed_resyncs": gaps}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
