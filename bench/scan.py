"""What the product costs a container that scans: connect() to a new destination at every
call, in a container under the product's programs and, a moment later, in cgroups without
them, in one process.

    sudo .venv/bin/python -m bench.scan [--cycles 100] [--block 1000] [--prog-stats] [--object BUILD.o]
    sudo .venv/bin/python -m bench.scan --product [--cycles 100]       # the whole product running

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
            time the detach takes to reach every process; the load times PROBE getppid()
            calls before each block, which shows whether the slow path was really off;
  unsummed  the container with summing off: a flow and an event per call, as before scans
            were summed (nobody reads the events, so once the perf buffer is full they are
            counted with their flows: the cheapest case).
programs / none = programs / plain divided by none / plain.

--product runs the whole product instead (daphne, the agent, the alert sender; SQLite; as
bench.pipeline runs it), its agent watching the container, measures its CPU idle for IDLE
seconds (which also lets its start-up work end first) and during the first SCANNING
seconds of a scan in the container, then the summing phase, then the hooks phase (the
bench detaches and attaches the agent's open() hooks through the product's pins). The
product's processes share every place's blocks alike, so the ratios hold only what the
programs and the hooks cost; on a node whose CPUs the load keeps busy the product's CPU is
that much less for it, which the last line works out: everything CrossEdge costs the
scanning container.
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
from pathlib import Path

from monitor.kernel import batch
from monitor.kernel.compile import SUMMARISE
from monitor.kernel.enforcer import OBJECT, Enforcer
from monitor.rules import MAX_LIMIT, RuleSet
from monitor.testbed import SimulatedContainer

from .alone import alone
from .container import program_stats, program_times, programs_on_one_container
from .pipeline import Product, cores_during, idle_cpu

TARGET = 0.90
# The load: for each line "cgroup-dir first n" it moves into the cgroup, makes WARM calls
# (untimed: the first calls after a move, or after the hooks changed, run slower), times PROBE
# getppid() calls (the cheapest syscall: its rate shows whether syscalls take the slow path),
# then n connects to destinations from first on, and prints how long the n took and the
# getppid() rate.
WARM = 100
PROBE = 20_000
LOAD = (
    f"WARM, PROBE = {WARM}, {PROBE}\n"
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
            probe, ppid = time.perf_counter(), os.getppid
            for _ in range(PROBE):
                ppid()
            probe = PROBE / (time.perf_counter() - probe)
            start = time.perf_counter()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.connect_ex((f"127.64.{k // 50 // 256 % 256}.{k // 50 % 256}", 20000 + k % 50))
        s.close()
    print(time.perf_counter() - start, probe, flush=True)
"""
)
IDLE = 10  # seconds the product runs idle (measured) between its start and the scan: its start-up work
# (first listing, first policy write, first uploads) is not the scan's
SCANNING = 20  # seconds of scanning in the container alone over which the product's CPU is measured, from the
# scan's start (its first flows, its violation): the summing phase's blocks take a few seconds on a fast machine
PHASES = {"summing": ("programs", "plain", "again"), "hooks": ("none", "plain"), "unsummed": ("unsummed", "plain")}
SETTLE = 0.6  # seconds before each block of the hooks phase: unpinned, the open() hooks' links are released
# in deferred work and the tracepoint after a grace period, so every process leaves the slow path ~0.3 s
# later (measured: 0.30-0.33 s; at 0.05 s, this phase's "none" still had it). Both places get the same pause.


class Load:
    """The scanning process: block(cgroup dir, n) -> (seconds n new destinations took there,
    getppid() calls a second just before them)."""

    def __init__(self, home: SimulatedContainer):
        self.proc = home.spawn([sys.executable, "-c", LOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first = 0  # every block reaches destinations no block reached before

    def block(self, where: str, n: int) -> tuple[float, float]:
        self.proc.stdin.write(f"{where} {self.first} {n}\n")
        self.proc.stdin.flush()
        self.first += n + WARM
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the scanning process ended")
        took, probe = map(float, line.split())
        return took, probe

    def close(self) -> None:
        """End it, wherever it is: a cgroup with a process in it cannot be removed."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def scan_for(load: Load, where: str, seconds: float, block: int) -> None:
    """Blocks in one place, back to back, for that long."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        load.block(where, block)


def quartiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[1]:.3f}  (quartiles {q[0]:.3f}-{q[2]:.3f})"


def run_cycles(load: Load, where: dict[str, str], places: tuple[str, ...], args, label: str, *, around=None,
               pause: bool = False, after=None) -> tuple[dict[str, list[float]], ...]:  # fmt: skip
    """args.cycles cycles of a block in each place, in rotating order: ({place: each cycle's
    rate there / rate in plain}, {place: each block's calls/s}, {place: each block's getppid()
    calls/s}). `around(place)` is a context entered for each block, `after()` runs after each
    cycle."""
    ratios: dict[str, list[float]] = {p: [] for p in places if p != "plain"}
    rates: dict[str, list[float]] = {p: [] for p in places}
    probes: dict[str, list[float]] = {p: [] for p in places}
    for c in range(args.cycles):
        took = {}
        for place in places[c % len(places) :] + places[: c % len(places)]:
            with around(place) if around else contextlib.nullcontext():
                if pause:
                    time.sleep(SETTLE)
                took[place], probe = load.block(where[place], args.block)
            probes[place].append(probe)
        for place in places:
            rates[place].append(args.block / took[place])
            if place != "plain":
                ratios[place].append(took["plain"] / took[place])
        if after:
            after()
        if (c + 1) % 10 == 0:
            print(f"{label} {c + 1}/{args.cycles}: " + ", ".join(
                f"{p} {statistics.median(r[-10:]):.3f}" for p, r in ratios.items()), file=sys.stderr)  # fmt: skip
    return ratios, rates, probes


@contextlib.contextmanager
def hooks_off(enforcer: Enforcer, place: str):
    """For a "none" block: the node's open() hooks detached, attached again after it."""
    if place == "none":
        enforcer.set_open_hooks(False)
    try:
        yield
    finally:
        if place == "none":
            enforcer.set_open_hooks(True)


def syscall_check(probes: dict[str, list[float]]) -> str:
    """How much faster a syscall was in the hooks phase's "none" blocks: the proof they were off."""
    none, plain = statistics.median(probes["none"]), statistics.median(probes["plain"])
    return (f"getppid() calls/s before the hooks phase's blocks: none {none:,.0f}, plain {plain:,.0f}: every "
            f"syscall {none / plain:.2f}x as fast without the hooks"
            + ("" if none / plain > 1.05 else " (NOT OFF: the hooks phase measured nothing)"))  # fmt: skip


def programs_alone(args, plain: SimulatedContainer, again: SimulatedContainer) -> int:
    """The three phases with the programs loaded by the bench itself (no agent)."""
    ratios: dict[str, list[float]] = {}
    kernel_ns: dict[str, int] = {}
    flows = {"summing": 0, "unsummed": 0}
    stats = program_stats() if args.prog_stats else contextlib.nullcontext()
    with (
        programs_on_one_container("scanner", args.object) as (app, enforcer),
        stats,
        contextlib.ExitStack() as stack,
    ):
        load = Load(plain)
        stack.callback(load.close)
        where = {"programs": app.dir, "unsummed": app.dir, "plain": plain.dir, "again": again.dir}
        where["none"] = plain.dir  # with the open() hooks detached

        @contextlib.contextmanager
        def around(place):
            before = program_times(enforcer) if args.prog_stats and place == "programs" else None
            with hooks_off(enforcer, place):
                yield
            if before:
                for name, (ns, _runs) in program_times(enforcer).items():
                    kernel_ns[name] = kernel_ns.get(name, 0) + ns - before[name][0]

        for version, (phase, places) in enumerate(PHASES.items(), start=1):
            enforcer.scan_summary = MAX_LIMIT if phase == "unsummed" else SUMMARISE
            enforcer.sync(RuleSet([], version))
            time.sleep(1.1)  # a scan's summing goes on to the end of its one-second window

            def drained(phase=phase):  # as the agent does: flows every second, traffic every 10 s
                enforcer.read_traffic()
                if phase in flows:
                    flows[phase] += len(batch.drain(enforcer.layout.map("flows")))

            got, rates, probes = run_cycles(load, where, places, args, phase, around=around,
                                            pause=phase == "hooks", after=drained)  # fmt: skip
            ratios |= got
            if phase == "summing":
                summing_rates = rates
            if phase == "hooks":
                hooks_probes = probes
    print(f"\nconnect() to a new destination at every call; {args.cycles} cycles a phase, {args.block:,} calls in each "
          "place per cycle; medians of the cycles' own ratios (rate there / rate in the plain cgroup):")  # fmt: skip
    for place, what in SHOWN.items():
        print(f"  {place:<10}{quartiles(ratios[place])}   {what}")
    print(f"  plain     {statistics.median(summing_rates['plain']):,.0f} calls/s (median of the blocks)")
    print(syscall_check(hooks_probes))
    ratio = statistics.median(ratios["programs"]) / statistics.median(ratios["none"])
    print(f"\nprograms / none = {ratio:.3f} ({'meets' if ratio >= TARGET else 'MISSES'} >= {TARGET:.2f})")
    if kernel_ns:
        n = args.cycles * args.block
        per_call = {name: ns / n for name, ns in kernel_ns.items() if ns}
        total, wall = sum(per_call.values()), 1e9 / statistics.median(summing_rates["programs"])
        parts = ", ".join(f"{name} {ns:,.0f} ns" for name, ns in per_call.items())
        print(f"the programs' own run time per call in the container (kernel.bpf_stats_enabled, which adds "
              f"a little to each run): {parts}; {total:,.0f} ns of a {wall:,.0f} ns call "
              f"({total / wall:.1%})")  # fmt: skip
    print(
        f"flows the kernel's table got for {args.cycles * args.block:,} calls to new destinations in the container: "
        + ", ".join(f"{phase} {n:,}" for phase, n in flows.items())
        + f" (summing: the scan's first {SUMMARISE}; unsummed: one a call)"
    )
    return 0 if ratio >= TARGET else 1


def whole_product(args, parent: str, plain: SimulatedContainer, again: SimulatedContainer) -> int:
    """The product's CPU idle and while the container scans; the summing phase with the whole
    product watching the container; then the hooks phase, the agent's open() hooks detached
    and attached again by the bench (through the product's pins)."""
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-scan-"))
    product = Product(tmp, parent)
    app = SimulatedContainer("scanner", parent, str(tmp / "docker")).create()  # before the agent attaches
    try:
        product.prepare()
        product.start()
        idle = idle_cpu(product, IDLE)  # its start-up work is over before the scan begins
        load = Load(plain)
        try:
            where = {"programs": app.dir, "plain": plain.dir, "again": again.dir, "none": plain.dir}
            _, cores = cores_during(product, lambda: scan_for(load, app.dir, SCANNING, args.block))
            ratios, rates, _probes = run_cycles(load, where, PHASES["summing"], args, "with the product")
            hooks = Enforcer(pin_root=product.pins)
            if not hooks.open():
                raise RuntimeError(f"the product's programs are not pinned under {product.pins}")
            got, _rates, probes = run_cycles(load, where, PHASES["hooks"], args, "hooks",
                                             around=lambda place: hooks_off(hooks, place), pause=True)  # fmt: skip
            ratios |= got
        finally:
            load.close()
    finally:
        product.stop()
        app.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    cpus, used = os.cpu_count() or 1, sum(cores.values())
    share = statistics.median(ratios["programs"])
    print(f"\nconnect() to a new destination at every call, with the whole product watching the container "
          f"(daphne, the agent, the alert sender; SQLite); {args.cycles} cycles, {args.block:,} calls in each place "
          "per cycle; medians of the cycles' own ratios (rate there / rate in the plain cgroup):")  # fmt: skip
    for place in ("programs", "again", "none"):
        print(f"  {place:<10}{quartiles(ratios[place])}   {SHOWN[place]}")
    print(f"  plain     {statistics.median(rates['plain']):,.0f} calls/s (median of the blocks)")
    print(syscall_check(probes))
    for when, each in (("idle before the scan", idle), (f"during the scan's first {SCANNING} s", cores)):
        print(f"the product's CPU {when}, cores: " + ", ".join(f"{r} {v:.3f}" for r, v in sorted(each.items()))
              + f"; in all {sum(each.values()):.3f} of {cpus}")  # fmt: skip
    hooks_share = statistics.median(ratios["none"])
    whole = share / hooks_share * (cpus - used) / cpus
    print(f"on a node whose {cpus} CPUs the scan keeps busy, against the same node without CrossEdge (no programs, "
          f"no open() hooks, no product): {share:.3f} / {hooks_share:.3f} x ({cpus} - {used:.3f}) / {cpus} = "
          f"{whole:.3f} ({'meets' if whole >= TARGET else 'MISSES'} >= {TARGET:.2f})")  # fmt: skip
    return 0 if whole >= TARGET else 1


SHOWN = {"programs": "the container, every program attached, summing",
         "again": "a second cgroup without programs: what this measure resolves",
         "none": "plain with the node's open() hooks detached (hooks phase): no CrossEdge",
         "unsummed": "the container with summing off (unsummed phase)"}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="cycles per phase")
    parser.add_argument("--block", type=int, default=1000, help="calls in each place per cycle")
    parser.add_argument("--object", default=str(OBJECT),
                        help="the programs to measure (another build of enforce_connect.bpf.o)")  # fmt: skip
    parser.add_argument("--prog-stats", action="store_true",
                        help="also measure the programs' own run time per call in the container")  # fmt: skip
    parser.add_argument("--product", action="store_true",
                        help="run the whole product (as bench.pipeline does) instead of loading the programs alone: "
                        "its CPU during a scan, the summing and hooks phases")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes cgroups and loads eBPF programs")
    if args.cycles < 2 or args.block < 1:
        parser.error("--cycles must be at least 2 and --block at least 1")
    if args.product and (args.prog_stats or args.object != str(OBJECT)):
        parser.error("--product runs the product's own build, without --prog-stats")
    meta = tempfile.mkdtemp(prefix="crossedge-bench-")
    tag = uuid.uuid4().hex[:8]
    outside = f"crossedge-bench-plain-{tag}.slice"  # no program is attached there
    plain, again = SimulatedContainer("plain", outside, meta), SimulatedContainer("again", outside, meta)
    try:
        plain.create()
        again.create()
        if args.product:
            return whole_product(args, f"crossedge-bench-{tag}.slice", plain, again)
        return programs_alone(args, plain, again)
    finally:
        plain.remove()
        again.remove()
        shutil.rmtree(meta, ignore_errors=True)


if __name__ == "__main__":
    alone()
    sys.exit(main())
