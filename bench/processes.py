"""Process monitoring under exec load: what it costs a container, and whether every exec is
accounted for.

    sudo .venv/bin/python -m bench.processes [--rounds 3] [--seconds 5] [--rates 1000,10000,0] [--json FILE]

Runs the product as `make run` does (daphne + the local agent: the exec and exit programs
report every process of the containers in scope; SQLite). A container cgroup of ours
spawns /bin/true and waits for it (fork+exec+exit, as a shell loop does) as fast as it can:

  ratio       spawns/s with CrossEdge running / without, the arms interleaved over
              --rounds pairs (without, start, with, stop, ..., without), medians compared
              (target >= 0.95)

and, in the first round, for each rate (0 = flat out) a fresh container cgroup spawning
at that rate for --seconds, then drained:

  generated   execs the load made (counted by the load itself)
  stored      execs stored for that container (a row folded in a storm counts its count)
  exits       exits stored for it
  rows        rows stored for it (execs and exits)
  lost        exec records the programs could not send, and anything the agent, spool or
              uplink dropped in the step
  unaccounted generated - stored - lost (must be 0)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from monitor.testbed import SimulatedContainer

from .alone import alone
from .pipeline import Product, drain

SPAWN = r"""
import os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
n, start = 0, time.perf_counter()
end = start + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate and n >= (now - start) * rate:
        time.sleep(min(0.001, end - now))
        continue
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    n += 1
print(n, time.perf_counter() - start, flush=True)
"""
COUNT = (
    "from django.db.models import Sum; from dashboard.events.models import ProcessEvent as P; "
    "q = P.objects.filter(container__name={name!r}); "
    "n = lambda qs: qs.aggregate(n=Sum('count'))['n'] or 0; "  # a row folded in a storm stands for `count`
    f"print(n(q.filter(kind='exec', binary={os.path.realpath('/bin/true')!r})), n(q.filter(kind='exit')), "
    "q.count())"
)


def spawn(container: SimulatedContainer, rate: float, seconds: float, workers: int = 2) -> tuple[int, float]:
    per = rate / workers if rate else 0
    procs = [container.spawn([sys.executable, "-c", SPAWN, str(per), str(seconds)], stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]  # fmt: skip
    results = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    return sum(int(n) for n, _ in results), max(float(t) for _, t in results)


def stored(product: Product, name: str) -> tuple[int, int, int]:
    """(execs, exits, rows) stored for the container."""
    execs, exits, rows = product.manage("shell", "--no-imports", "-c", COUNT.format(name=name)).split()[-3:]
    return int(execs), int(exits), int(rows)


def lost(product: Product) -> int:
    """Exec records lost: the programs' count of unsent execs, plus what the agent, spool or
    uplink dropped (all kinds: those stages do not tell kinds apart; none is expected)."""
    by_stage = product.node()["lost"]
    processes = product.node_health().get("processes", {})
    return processes.get("lost_exec", 0) + sum(by_stage.values()) - by_stage.get("kernel_buffer", 0)


def step(product: Product, c: SimulatedContainer, name: str, rate: float, seconds: float) -> dict:
    before = lost(product)
    generated, took = spawn(c, rate, seconds)
    drain(lambda: (stored(product, name)[0], lost(product) - before), generated)
    (execs, exits, rows), dropped = stored(product, name), lost(product) - before
    return {
        "rate": rate or "flat out",
        "generated": generated,
        "achieved_per_s": round(generated / took),
        "stored": execs,
        "exits": exits,
        "rows": rows,
        "lost_counted": dropped,
        "unaccounted": generated - execs - dropped,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="1000,10000,0", help="execs/s, comma separated; 0 = flat out")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it runs the agent and makes cgroups")
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-processes-"))
    parent = f"crossedge-bench-{uuid.uuid4().hex[:8]}.slice"
    product = Product(tmp, parent)
    made: list[SimulatedContainer] = []

    def container(name):
        made.append(SimulatedContainer(name, parent, str(tmp / "docker")).create())
        return made[-1]

    without, with_product, steps = [], [], []
    try:
        product.prepare()
        flat = container("bench-spawn")
        for round_ in range(args.rounds):  # the arms interleaved
            n, t = spawn(flat, 0, 3)
            without.append(n / t)
            product.start()
            try:
                n, t = spawn(flat, 0, 3)
                with_product.append(n / t)
                if round_ == 0:
                    for rate in (float(r) for r in args.rates.split(",")):
                        name = f"bench-exec-{int(rate) or 'max'}"
                        steps.append(step(product, container(name), name, rate, args.seconds))
                        print(f"step: {steps[-1]}", file=sys.stderr)
            finally:
                product.stop()
        n, t = spawn(flat, 0, 3)
        without.append(n / t)
    finally:
        product.stop()
        for c in made:
            c.remove()
    ratio = statistics.median(with_product) / statistics.median(without)
    cols = ["rate", "generated", "achieved_per_s", "stored", "exits", "rows", "lost_counted", "unaccounted"]
    print("\nexec records under fork+exec load (agent: exec/exit programs; dashboard: SQLite)")
    print("".join(f"{c:>15}" for c in cols))
    for s in steps:
        print("".join(f"{str(s[c]):>15}" for c in cols))
    print(f"\nfork+exec of /bin/true flat out with CrossEdge / without ({args.rounds} interleaved pairs, medians): "
          f"{statistics.median(with_product):,.0f} / {statistics.median(without):,.0f} per s = {ratio:.3f} "
          "(target >= 0.95)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "ratio": round(ratio, 3), "without_per_s": without,
                                               "with_crossedge_per_s": with_product}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
