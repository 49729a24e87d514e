"""File monitoring under open() load: what it costs, and whether every watched open is
accounted for.

    sudo .venv/bin/python -m bench.files [--rounds 5] [--seconds 3] [--rates 1000,10000,0] [--deny] [--json FILE]

Runs the product as `make run` does (daphne + the local agent with the default watches;
SQLite). bench/openloop.c (built here with clang) open()s and close()s a file as fast as
it can, two workers, one per core:

  container   an ordinary file, from a container cgroup of ours (target >= 0.95)
  host        the same, from a process outside every container: what the open() hooks
              cost the rest of the machine
  floor       the same from the container, with an empty program on the same tracepoint
              instead of CrossEdge: what this kernel charges for any open() hook at all
              (every syscall of every process takes the slow path while one is attached);
              the container and host arms are also given as a share of it: CrossEdge's
              own work

each as opens/s with / without, the arms interleaved over --rounds (without, with, ...,
without), medians compared. Then, for each rate (0 = flat out), a container reads a watched
file (a directory an `allow` file rule names) at that rate for --seconds:

  generated   opens the load made        stored  opens stored (a folded row counts its count)
  rows        rows stored                lost    open records the programs could not send,
  unaccounted generated - stored - lost          and what agent, spool or uplink dropped
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

from monitor.kernel import links
from monitor.testbed import SimulatedContainer

from .alone import alone
from .pipeline import Product, drain

HERE = Path(__file__).parent
FLOOR = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tracepoint/syscalls/sys_exit_openat") int floor_exit(void *ctx) { return 0; }
"""
COUNT = (
    "from django.db.models import Sum; from dashboard.events.models import ProcessEvent as P; "
    "q = P.objects.filter(container__name={name!r}, kind='open'); "
    "print(q.aggregate(n=Sum('count'))['n'] or 0, q.count())"
)


def build(tmp: Path) -> tuple[Path, Path]:
    """The load (bench/openloop.c) and the floor's empty programs."""
    loop, floor = tmp / "openloop", tmp / "floor.bpf.o"
    subprocess.run(["clang", "-O2", "-o", str(loop), str(HERE / "openloop.c")], check=True)
    (tmp / "floor.bpf.c").write_text(FLOOR)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{HERE.parent / 'bpfscripts'}", "-c",
                    str(tmp / "floor.bpf.c"), "-o", str(floor)], check=True)  # fmt: skip
    return loop, floor


def opens(loop: Path, files: list[Path], spawn, rate: float = 0, seconds: float = 3, mode: str = "r") -> float:
    """Opens per second of len(files) workers (each its own file), or (n, took) at a rate."""
    per = rate / len(files) if rate else 0
    procs = [spawn([str(loop), str(f), mode, str(per), str(seconds)], stdout=subprocess.PIPE, text=True)
             for f in files]  # fmt: skip
    results = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    return sum(int(n) for n, _ in results), max(float(t) for _, t in results)


def rate_of(result) -> float:
    n, took = result
    return n / took


class Floor:
    """An empty program on sys_exit_openat (where CrossEdge's is), pinned under our own bpffs directory."""

    def __init__(self, obj: Path, pins: Path):
        self.obj, self.pins = obj, pins

    def __enter__(self):
        subprocess.run(["bpftool", "prog", "loadall", str(self.obj), str(self.pins)], check=True)
        links.attach_tracepoint(str(self.pins / "floor_exit"), "syscalls/sys_exit_openat", str(self.pins / "lx"))
        return self

    def __exit__(self, *exc):
        subprocess.run(["rm", "-rf", str(self.pins)], check=True)


def step(product: Product, c: SimulatedContainer, loop: Path, watched: Path, rate: float, seconds: float) -> dict:
    before = lost(product)
    generated, took = opens(loop, [watched], c.spawn, rate, seconds)
    drain(lambda: (count(product, c.name)[0], lost(product) - before), generated)
    (stored, rows), dropped = count(product, c.name), lost(product) - before
    return {"rate": rate or "flat out", "generated": generated, "achieved_per_s": round(generated / took),
            "stored": stored, "rows": rows, "lost_counted": dropped,
            "unaccounted": generated - stored - dropped}  # fmt: skip


def count(product: Product, name: str) -> tuple[int, int]:
    stored, rows = product.manage("shell", "--no-imports", "-c", COUNT.format(name=name)).split()[-2:]
    return int(stored), int(rows)


def lost(product: Product) -> int:
    by_stage = product.node()["lost"]
    processes = product.node_health().get("processes", {})
    return processes.get("lost_open", 0) + sum(by_stage.values()) - by_stage.get("kernel_buffer", 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="1000,10000,0", help="watched opens/s, comma separated; 0 = flat out")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--deny", action="store_true",
                        help="also an open deny (of a file no arm opens) in force: 32-bit calls are then refused, "
                        "by a program at every system call")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it runs the agent, loads programs and makes cgroups")
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-files-"))
    parent = f"crossedge-bench-{uuid.uuid4().hex[:8]}.slice"
    product = Product(tmp, parent)
    loop, floor_obj = build(tmp)
    files = [tmp / f"plain-{i}" for i in range(2)]
    watched = tmp / "watched" / "secret"
    watched.parent.mkdir()
    for f in [*files, watched]:
        f.write_text("x")
    policy = tmp / "policy.yaml"
    policy.write_text(f"rules:\n  - id: bench-watch\n    match: {{path: '{watched.parent}/*'}}\n    action: allow\n")
    if args.deny:
        deny = f"  - id: bench-deny\n    match: {{path: '{tmp}/never'}}\n    action: deny\n"
        policy.write_text(policy.read_text() + deny)
    floor = Floor(floor_obj, Path(f"/sys/fs/bpf/{parent.removesuffix('.slice')}-floor"))
    made: list[SimulatedContainer] = []

    def container(name):
        made.append(SimulatedContainer(name, parent, str(tmp / "docker")).create())
        return made[-1]

    arms = {"container": ([], []), "host": ([], []), "floor": ([], [])}
    steps = []
    try:
        product.prepare()
        product.manage("policy", "import", str(policy))
        flat = container("bench-open")
        host = subprocess.Popen

        def measure(into: int) -> None:
            arms["container"][into].append(rate_of(opens(loop, files, flat.spawn, seconds=args.seconds)))
            arms["host"][into].append(rate_of(opens(loop, files, host, seconds=args.seconds)))

        for round_ in range(args.rounds):  # the arms interleaved
            measure(0)
            arms["floor"][0].append(arms["container"][0][-1])
            with floor:
                arms["floor"][1].append(rate_of(opens(loop, files, flat.spawn, seconds=args.seconds)))
            product.start()
            try:
                measure(1)
                if round_ == 0:
                    for rate in (float(r) for r in args.rates.split(",")):
                        c = container(f"bench-open-{int(rate) or 'max'}")
                        steps.append(step(product, c, loop, watched, rate, args.seconds))
                        print(f"step: {steps[-1]}", file=sys.stderr)
            finally:
                product.stop()
        measure(0)
    finally:
        product.stop()
        for c in made:
            c.remove()
    cols = ["rate", "generated", "achieved_per_s", "stored", "rows", "lost_counted", "unaccounted"]
    print("\nwatched opens under load (agent: open programs, default watches + one allow rule; dashboard: SQLite)")
    print("".join(f"{c:>15}" for c in cols))
    for s in steps:
        print("".join(f"{str(s[c]):>15}" for c in cols))
    print(f"\nopen()+close() of an ordinary file flat out, with / without ({args.rounds} interleaved rounds, medians):")
    ratios = {}
    targets = {"container": " (target >= 0.95)", "host": " (target >= 0.97)", "floor": ""}
    for name, (without, with_) in arms.items():
        ratios[name] = statistics.median(with_) / statistics.median(without)
        what = {"container": "CrossEdge, in a container", "host": "CrossEdge, a host process",
                "floor": "an empty program on the same tracepoint"}[name]  # fmt: skip
        print(f"  {what:<40} {statistics.median(with_):>10,.0f} / {statistics.median(without):>10,.0f} per s = "
              f"{ratios[name]:.3f}{targets[name]}")  # fmt: skip
    floor = statistics.median(arms["floor"][1])
    print("\nCrossEdge's own work, beyond what any program on the tracepoint costs (with / the floor's with):")
    for name in ("container", "host"):
        ratios[f"{name}_of_floor"] = statistics.median(arms[name][1]) / floor
        print(f"  {name:<40} {statistics.median(arms[name][1]):>10,.0f} / {floor:>10,.0f} per s = "
              f"{ratios[f'{name}_of_floor']:.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "ratios": ratios, "arms": arms}, indent=2))
    return 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
