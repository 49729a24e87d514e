"""The whole pipeline under connect() load: what was generated, stored, delivered, lost.

    sudo .venv/bin/python -m bench.pipeline [--seconds 5] [--rates 1000,5000,20000,0] [--json FILE]
                                            [--trace-syscalls]

Runs the product as `make run` does (daphne + the local agent, whose connect4/6 programs
observe the containers and enforce; SQLite, in-memory layer) in a temporary directory, with
one websocket subscriber on the connection feed. --trace-syscalls runs connect.bt as well
(host processes and connect() results), as `runagent --trace-syscalls` does.

For each rate (0 = flat out) a fresh container cgroup of ours makes paced TCP connects to a
loopback listener for --seconds; then the bench waits for the pipeline to drain and
reports, per rate:

  generated   connects the load made (counted by the load itself)
  stored      connections stored for that container (the sum of the stored rows' counts)
  rows        rows stored for them (repeats are counted in the kernel, not sent one by one)
  delivered   of those, connections the websocket subscriber received (folded rows count their count)
  lost        what the node reports lost in the step (kernel buffers, agent queue, spool cap)
  unaccounted generated - stored - lost (must be 0)
  p50/p99     connect() -> subscriber latency (event time to receipt)
  CPU         agent (with its tracers) and dashboard CPU seconds per second of load
  peak RSS    agent and dashboard high-water marks
  overview    the slowest overview page load while the load ran (a user reloading it)
  folded      allowed connections the agent has folded into per-flow counts so far (storm mode)

and flat-out connect() throughput with CrossEdge running as a ratio of the same load with
CrossEdge stopped (measured before and after, medians).
"""

from __future__ import annotations

import argparse
import asyncio
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
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from monitor.testbed import SimulatedContainer

from .loopback import start_listener

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
LOAD = r"""
import socket, struct, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
linger = struct.pack("ii", 1, 0)
n, start = 0, time.perf_counter()
end = start + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate and n >= (now - start) * rate:
        time.sleep(min(0.001, end - now))
        continue
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex((host, port))
    s.close()
    n += 1
print(n, time.perf_counter() - start, flush=True)
"""


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
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        subprocess.run([sys.executable, "manage.py", "runagent", "--uninstall", "--pin-root", self.pins], cwd=ROOT,
                       env=self.env, capture_output=True)  # fmt: skip

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
    """One browser's connection feed: rows and latencies per container."""

    def __init__(self, product: Product):
        super().__init__(daemon=True)
        self.product, self.rows, self.latency, self.gaps = product, {}, {}, 0
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
                    self.rows[name] = self.rows.get(name, 0) + row.get("count", 1)
                    sent = datetime.fromisoformat(row["ts"]).timestamp()
                    self.latency.setdefault(name, []).append(now - sent)


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


def load(container: SimulatedContainer, port: int, rate: float, seconds: float, workers: int) -> tuple[int, float]:
    per = rate / workers if rate else 0
    procs = [container.spawn([sys.executable, "-c", LOAD, "127.0.0.1", str(port), str(per), str(seconds)],
                             stdout=subprocess.PIPE, text=True) for _ in range(workers)]  # fmt: skip
    results = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    return sum(int(n) for n, _ in results), max(float(t) for _, t in results)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load per rate")
    parser.add_argument("--rates", default="1000,5000,20000,0", help="connects/s, comma separated; 0 = flat out")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--trace-syscalls", action="store_true", help="run connect.bt too (runagent --trace-syscalls)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it runs the agent and makes cgroups")
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-pipeline-"))
    tag = uuid.uuid4().hex[:8]
    parent = f"crossedge-bench-{tag}.slice"
    target, port = start_listener()
    product = Product(tmp, parent, args.trace_syscalls)
    made: list[SimulatedContainer] = []

    def container(name):
        made.append(SimulatedContainer(name, parent, str(tmp / "docker")).create())
        return made[-1]

    baseline, with_product, steps = [], [], []
    try:
        product.manage("migrate", "--noinput")
        product.manage("ensureadmin")
        product.key = product.manage("apitoken", "admin", "bench").strip()
        flat = container("bench-flat")
        for _ in range(3):
            n, t = load(flat, port, 0, 3, 2)
            baseline.append(n / t)
        product.start()
        subscriber = Subscriber(product)
        subscriber.start()
        subscriber.ready.wait(30)
        cookie = product.session_cookie()
        pids = product.pids()
        for rate in rates:
            name = f"bench-{int(rate) or 'max'}-{len(steps)}"
            c = container(name)
            lost_before = sum(product.node()["lost"].values())
            cpu_before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            probe = PageProbe(product, cookie)
            probe.start()
            generated, took = load(c, port, rate, args.seconds, 1 if 0 < rate <= 5000 else 2)
            probe.stop.set()
            probe.join()
            if rate == 0:
                with_product.append(generated / took)
            cpu = {k: (sum(cpu_seconds(p) for p in v) - cpu_before[k]) / took for k, v in pids.items()}
            deadline, stored, last = time.monotonic() + 120, -1, None
            while time.monotonic() < deadline:  # drain: until nothing more arrives for 3 s
                stored, rows = product.stored(name)
                if stored >= generated or (last is not None and stored == last[0] and time.monotonic() - last[1] > 3):
                    break
                if last is None or stored != last[0]:
                    last = (stored, time.monotonic())
                time.sleep(1)
            time.sleep(1)
            lost = sum(product.node()["lost"].values()) - lost_before
            lat = subscriber.latency.get(name, [])
            steps.append(
                {
                    "rate": rate or "flat out",
                    "generated": generated,
                    "achieved_per_s": round(generated / took),
                    "stored": stored,
                    "rows": rows,
                    "delivered": subscriber.rows.get(name, 0),
                    "lost_counted": lost,
                    "unaccounted": generated - stored - lost,
                    "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
                    "agent_cpu": round(cpu["agent"], 2),
                    "dashboard_cpu": round(cpu["dashboard"], 2),
                    "agent_peak_mib": round(peak_rss_mib(pids["agent"])),
                    "dashboard_peak_mib": round(peak_rss_mib(pids["dashboard"])),
                    "overview_max_ms": round(max(probe.times, default=0) * 1000),
                    "folded": product.node_health().get("aggregated", 0),
                }
            )
            print(f"rate {rate or 'flat out'}: {steps[-1]}", file=sys.stderr)
        for _ in range(2):
            n, t = load(flat, port, 0, 3, 2)
            with_product.append(n / t)
    finally:
        product.stop()
        for _ in range(3):
            try:
                n, t = load(made[0], port, 0, 3, 2) if made else (0, 1)
                baseline.append(n / t)
            except Exception:  # noqa: BLE001 (cleanup comes first)
                break
        for c in made:
            c.remove()
        target.kill()
        target.wait()
    ratio = statistics.median(with_product) / statistics.median(baseline)
    cols = ["rate", "generated", "achieved_per_s", "stored", "rows", "delivered", "lost_counted", "unaccounted",
            "p50_ms", "p99_ms", "agent_cpu", "dashboard_cpu", "agent_peak_mib", "dashboard_peak_mib", "overview_max_ms",
            "folded"]  # fmt: skip
    source = "connect4/6 programs" + (" + connect.bt" if args.trace_syscalls else "")
    print(f"\npipeline under loopback connect() load (agent: {source}, observing and enforcing; "
          "dashboard: SQLite, one subscriber)")  # fmt: skip
    print("".join(f"{c:>15}" for c in cols))
    for s in steps:
        print("".join(f"{str(s[c]):>15}" for c in cols))
    print(f"\nflat-out connect() throughput with CrossEdge / without: {statistics.median(with_product):,.0f} / "
          f"{statistics.median(baseline):,.0f} per s = {ratio:.2f} (target >= 0.90)")  # fmt: skip
    result = {"steps": steps, "throughput_ratio": round(ratio, 3), "baseline_per_s": baseline,
              "with_crossedge_per_s": with_product, "feed_resyncs": subscriber.gaps if steps else 0}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
