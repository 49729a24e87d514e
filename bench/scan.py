"""What the product costs a container that scans: connect() to a new destination at every
call, in a container under the product's programs and, a moment later, in cgroups without
them, in one process.

    sudo .venv/bin/python -m bench.scan [--cycles 100] [--block 1000] [--prog-stats]

This machine's CPUs change speed from one half second to the next by up to ±15 % (a plain
Python loop, nothing attached), far more than the programs cost; two runs of the same
thing a few seconds apart differ by as much. So the load is one process that moves itself
between cgroups (cgroup.procs) and makes BLOCK calls in each (after 100 untimed ones), every
place once per cycle in rotating order: the places compared ran within a tenth of a second
of each other. Each figure is the median over the cycles of the cycle's own ratio of rates,
against the plain cgroup. Three phases:

  summing   programs: the container, under every program of the product (connect,
            sendmsg, and the packet programs that count traffic), empty policy, summing from
            SUMMARISE new destinations a second as on a node; plain: a cgroup the programs
            are not attached to; again: a second such cgroup, plain against plain, which
            shows what this measure resolves;
  hooks     none: the plain cgroup with the node's open() hooks detached (syscall
            tracepoints: while they are attached every syscall of the machine takes the slow
            path), against plain with them: that much more is what CrossEdge costs a process
            it does not even watch. (The cgroup hooks stay switched on for the container: their
            static keys, a few loads a call.) Both places wait SETTLE before each block, the
            time the detach takes;
  unsummed  the container with summing off: a flow and an event per call, as before scans
            were summed (nobody reads the events, so once the perf buffer is full they are
            counted with their flows: the cheapest case).
programs / none = programs / plain divided by none / plain.
Between cycles the flow and traffic tables are drained, as the agent does (it reads flows
every second and forgets idle ones before the table fills; left alone, the unsummed phase
would fill it, and a miss costs more in a full table).

Target (issue 13): programs >= 0.90 of none. (bench/pipeline.py measures the same scan with
the whole product running, agent, dashboard and database included, arm after arm.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from monitor.kernel import batch, links
from monitor.kernel.compile import SUMMARISE
from monitor.kernel.enforcer import OBJECT, TRACEPOINTS
from monitor.rules import MAX_LIMIT, RuleSet
from monitor.testbed import SimulatedContainer

from .alone import alone
from .container import program_stats, program_times, programs_on_one_container

TARGET = 0.90
# The load: for each line "cgroup-dir first n" it moves into the cgroup, makes WARM calls
# (untimed: the first calls after a move, or after the hooks changed, run slower) and n more,
# to destinations from first on, and prints how long the n took.
WARM = 100
LOAD = (
    f"WARM = {WARM}\n"
    + r"""
import os, socket, struct, sys, time
linger = struct.pack("ii", 1, 0)
for line in sys.stdin:
    where, first, n = line.split()
    with open(os.path.join(where, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
    first, n = int(first), int(n)
    for k in range(first, first + n + WARM):
        if k == first + WARM:
            start = time.perf_counter()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.connect_ex((f"127.64.{k // 50 // 256 % 256}.{k // 50 % 256}", 20000 + k % 50))
        s.close()
    print(time.perf_counter() - start, flush=True)
"""
)
PHASES = {"summing": ("programs", "plain", "again"), "hooks": ("none", "plain"), "unsummed": ("unsummed", "plain")}
SETTLE = 0.05  # seconds before each block of the hooks phase: the open() hooks' links go with their
# pins within it, and both places get the same pause (a block that follows a pause runs slower)


def set_open_hooks(enforcer, on: bool) -> None:
    """Attach or detach the node's open() tracepoint programs (the enforcer's links)."""
    for name, tracepoint in TRACEPOINTS.items():
        if on:
            links.attach_tracepoint(enforcer.layout.prog(name), tracepoint, enforcer.layout.link(name))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(enforcer.layout.link(name))


class Load:
    """The scanning process: block(cgroup dir, n) -> seconds n new destinations took there."""

    def __init__(self, home: SimulatedContainer):
        self.proc = home.spawn([sys.executable, "-c", LOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first = 0  # every block reaches destinations no block reached before

    def block(self, where: str, n: int) -> float:
        self.proc.stdin.write(f"{where} {self.first} {n}\n")
        self.proc.stdin.flush()
        self.first += n + WARM
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the scanning process ended")
        return float(line)

    def close(self) -> None:
        """End it where it started (a cgroup with a process in it cannot be removed)."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def quartiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[1]:.3f}  (quartiles {q[0]:.3f}-{q[2]:.3f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="cycles per phase")
    parser.add_argument("--block", type=int, default=1000, help="calls in each place per cycle")
    parser.add_argument("--object", default=str(OBJECT),
                        help="the programs to measure (another build of enforce_connect.bpf.o)")  # fmt: skip
    parser.add_argument("--prog-stats", action="store_true",
                        help="also measure the programs' own run time per call in the container")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes cgroups and loads eBPF programs")
    if args.cycles < 2 or args.block < 1:
        parser.error("--cycles must be at least 2 and --block at least 1")
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    flows = {phase: 0 for phase in PHASES}  # in the container's phases
    kernel_ns: dict[str, int] = {}
    meta = tempfile.mkdtemp(prefix="crossedge-bench-")
    parent = f"crossedge-bench-plain-{uuid.uuid4().hex[:8]}.slice"
    plain, again = SimulatedContainer("plain", parent, meta), SimulatedContainer("again", parent, meta)
    stats = program_stats() if args.prog_stats else contextlib.nullcontext()
    try:
        with (
            programs_on_one_container("scanner", args.object) as (app, enforcer),
            stats,
            contextlib.ExitStack() as stack,
        ):
            plain.create()
            again.create()
            load = Load(plain)
            stack.callback(load.close)
            where = {"programs": app.dir, "unsummed": app.dir, "plain": plain.dir, "again": again.dir}
            where["none"] = plain.dir  # with the open() hooks detached
            for phase, places in PHASES.items():
                enforcer.scan_summary = MAX_LIMIT if phase == "unsummed" else SUMMARISE
                enforcer.sync(RuleSet([], 1 + list(PHASES).index(phase)))
                time.sleep(1.1)  # a scan's summing goes on to the end of its one-second window
                for c in range(args.cycles):
                    took = {}
                    for place in places[c % len(places) :] + places[: c % len(places)]:
                        if place == "none":
                            set_open_hooks(enforcer, False)
                        before = program_times(enforcer) if args.prog_stats and place == "programs" else None
                        if phase == "hooks":
                            time.sleep(SETTLE)
                        took[place] = load.block(where[place], args.block)
                        if before:
                            for name, (ns, _runs) in program_times(enforcer).items():
                                kernel_ns[name] = kernel_ns.get(name, 0) + ns - before[name][0]
                        if place == "none":
                            set_open_hooks(enforcer, True)
                    for place in places:
                        rates.setdefault(place, []).append(args.block / took[place])
                        if place != "plain":
                            ratios.setdefault(place, []).append(took["plain"] / took[place])
                    enforcer.read_traffic()
                    flows[phase] += len(batch.drain(enforcer.layout.map("flows")))
                    if (c + 1) % 10 == 0:
                        print(f"{phase} {c + 1}/{args.cycles}: " + ", ".join(
                            f"{p} {statistics.median(ratios[p][-10:]):.3f}" for p in ratios if p in places),
                            file=sys.stderr)  # fmt: skip
    finally:
        plain.remove()
        again.remove()
        shutil.rmtree(meta, ignore_errors=True)
    print(f"\nconnect() to a new destination at every call; {args.cycles} cycles a phase, {args.block:,} calls in each "
          "place per cycle; medians of the cycles' own ratios (rate there / rate in the plain cgroup):")  # fmt: skip
    shown = {"programs": "the container, every program attached, summing",
             "again": "a second cgroup without programs: what this measure resolves",
             "none": "plain with the node's open() hooks detached (hooks phase): no CrossEdge",
             "unsummed": "the container with summing off (unsummed phase)"}  # fmt: skip
    for place, what in shown.items():
        print(f"  {place:<10}{quartiles(ratios[place])}   {what}")
    print(f"  plain     {statistics.median(rates['plain']):,.0f} calls/s (median of the blocks)")
    ratio = statistics.median(ratios["programs"]) / statistics.median(ratios["none"])
    print(f"\nprograms / none = {ratio:.3f} "
          f"({'meets' if ratio >= TARGET else 'MISSES'} >= {TARGET:.2f})")  # fmt: skip
    if kernel_ns:
        n = args.cycles * args.block
        per_call = {name: ns / n for name, ns in kernel_ns.items() if ns}
        total, wall = sum(per_call.values()), 1e9 / statistics.median(rates["programs"])
        parts = ", ".join(f"{name} {ns:,.0f} ns" for name, ns in per_call.items())
        print(f"the programs' own run time per call in the container (kernel.bpf_stats_enabled, which adds "
              f"a little to each run): {parts}; {total:,.0f} ns of a {wall:,.0f} ns call "
              f"({total / wall:.1%})")  # fmt: skip
    calls = args.cycles * args.block
    print(
        f"flows the kernel's table got for {calls:,} calls to new destinations in the container: "
        + ", ".join(f"{phase} {flows[phase]:,}" for phase in ("summing", "unsummed"))
        + f" (summing: the scan's first {SUMMARISE}; unsummed: one a call)"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    alone()
    sys.exit(main())
