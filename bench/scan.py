"""What the programs cost a container that scans: connect() to a new destination at every
call, with the product's programs attached against none, in one run.

    sudo .venv/bin/python -m bench.scan [--rounds 11] [--connects 20000] [--prog-stats]

One container cgroup under the product's programs (pinned apart, with an empty policy: the
scan is summed from SUMMARISE new destinations a second on, as on a node). Each round, in
rotating order, a fresh process in the container connects to N destinations it never
reached before (closed loopback ports on 127.64.0.0/16: refused at once, still judged)
with:
  programs   every program attached (connect, sendmsg, and the packet programs that count
             traffic), summing as the product does;
  unsummed   the same, with summing off (every new destination a flow and an event, as
             before scans were summed; nobody reads the events here, so after the perf
             buffer fills they are counted with their flows, the cheapest case);
  connect    the connect and sendmsg programs only (summing), the packet programs detached;
  none       every program detached.
The packet programs' traffic table is drained between arms, as the agent does every 10 s.
After the run it says how many flows the kernel's table holds (not one per call).

Target (issue 13): programs >= 0.90 of none. (bench/pipeline.py measures the same scan with
the whole product running: agent, dashboard and database included.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

from monitor.kernel.compile import SUMMARISE
from monitor.kernel.enforcer import PROGRAMS
from monitor.rules import MAX_LIMIT, RuleSet

from .alone import alone
from .container import program_stats, program_times, programs_on_one_container, set_attached

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.90
SCAN = r"""
import socket, struct, sys, time
first, n = int(sys.argv[1]), int(sys.argv[2])
linger = struct.pack("ii", 1, 0)
start, cpu = time.perf_counter(), time.process_time()
for k in range(first, first + n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect_ex((f"127.64.{k // 50 // 256 % 256}.{k // 50 % 256}", 20000 + k % 50))
    s.close()
print(n / (time.perf_counter() - start), n / (time.process_time() - cpu))
"""
ARMS = ("programs", "unsummed", "connect", "none")
PACKET_PROGRAMS = ("crossedge_in", "crossedge_out")


def scan(container, first: int, n: int) -> tuple[float, float]:
    """Calls a second, and calls a second of the scanner's own CPU time (user and system,
    the programs' run included: what each call costs it, whatever else the machine runs)."""
    proc = container.spawn([sys.executable, "-c", SCAN, str(first), str(n)], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError("the scan failed")
    rate, per_cpu = map(float, out.split())
    return rate, per_cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--connects", type=int, default=20000, help="new destinations per arm per round")
    parser.add_argument("--prog-stats", action="store_true",
                        help="also measure the programs' own run time per call in the programs arm")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes cgroups and loads eBPF programs")
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    per_cpu: dict[str, list[float]] = {arm: [] for arm in ARMS}
    made = {arm: 0 for arm in ARMS}
    kernel_ns: dict[str, int] = {}
    stats = program_stats() if args.prog_stats else contextlib.nullcontext()
    with programs_on_one_container("scanner") as (app, enforcer), stats:
        enforcer.sync(RuleSet([], 1))
        first = 0
        for r in range(args.rounds):
            for arm in ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]:
                for name in PROGRAMS:
                    set_attached(enforcer, name, arm != "none" and not (arm == "connect" and name in PACKET_PROGRAMS))
                enforcer.scan_summary = MAX_LIMIT if arm == "unsummed" else SUMMARISE
                enforcer.sync(RuleSet([], 2 + r * 3 + ARMS.index(arm)))
                before = program_times(enforcer) if args.prog_stats and arm == "programs" else None
                rate, cpu_rate = scan(app, first, args.connects)
                results[arm].append(rate)
                per_cpu[arm].append(cpu_rate)
                if before:
                    for name, (ns, _runs) in program_times(enforcer).items():
                        kernel_ns[name] = kernel_ns.get(name, 0) + ns - before[name][0]
                first += args.connects  # every arm reaches destinations no arm reached before
                made[arm] += args.connects
                enforcer.read_traffic()
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{a} {results[a][-1]:,.0f}/s" for a in ARMS),
                  file=sys.stderr)  # fmt: skip
        flows = sum(1 for _raw, key, _w, _n in enforcer.flows() if key[0] == app.cgroup_id)
        calls = sum(made[arm] for arm in ARMS if arm != "none")
    base = statistics.median(results["none"])
    print(f"\nconnect() to a new destination at every call, from a container, {args.rounds} interleaved rounds x "
          f"{args.connects:,} calls, medians:")  # fmt: skip
    for arm in ARMS:
        print(f"{arm:<10}{statistics.median(results[arm]):>10,.0f}/s  {statistics.median(results[arm]) / base:.3f}")
    ratio = statistics.median(results["programs"]) / base
    paired = statistics.median(p / n for p, n in zip(results["programs"], results["none"], strict=True))
    by_cpu = statistics.median(per_cpu["programs"]) / statistics.median(per_cpu["none"])
    print(f"\nprograms / none = {ratio:.3f} ({'meets' if ratio >= TARGET else 'MISSES'} >= {TARGET:.2f}); "
          f"median of the rounds' own ratios {paired:.3f}; per second of the scanner's own CPU time "
          f"{by_cpu:.3f}")  # fmt: skip
    # in each summed arm the first SUMMARISE new destinations of the scan's first second got flows
    if kernel_ns:
        n = made["programs"]
        per_call = {name: ns / n for name, ns in kernel_ns.items() if ns}
        total, wall = sum(per_call.values()), 1e9 / statistics.median(results["programs"])
        parts = ", ".join(f"{name} {ns:,.0f} ns" for name, ns in per_call.items())
        print(f"the programs' own run time per call in the programs arm (kernel.bpf_stats_enabled): {parts}; "
              f"{total:,.0f} ns of a {wall:,.0f} ns call ({total / wall:.1%})")  # fmt: skip
    print(f"flows in the kernel's table after {calls:,} calls to new destinations with the programs attached: "
          f"{flows:,} (the unsummed arms' and each summing arm's first {SUMMARISE} a second)")  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    alone()
    sys.exit(main())
