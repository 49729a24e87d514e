"""What the ingress blocklist costs: UDP packets/s between two network namespaces of the
benchmark's own with crossedge_xdp holding 10,000 entries on the receiving veth, against
no XDP program, in one run.

    sudo .venv/bin/python -m bench.xdp [--rounds 11] [--seconds 2] [--flood-rule] [--prog-stats]

Two namespaces joined by a veth pair (198.18.0.1 -> 198.18.0.2). Each round, in rotating
order: "blocklist" (crossedge_xdp attached to the receiving end, --mode native or generic, 10,000 deny
entries for other /32s in 198.19.0.0/16, so every packet is looked up and passed),
"xdp-pass" (an XDP program that only passes: what any program costs on the device) and
"none" (no program). In each, a sender in the first namespace sends 64-byte UDP datagrams as
fast as it can for N seconds and a receiver in the second counts what arrives: packets/s
received is the figure. A last arm blocks the sender itself, to show the drops are counted.

Target (issue 13): blocklist >= 0.95 of none.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from monitor.kernel import bpftool
from monitor.rules import RuleSet
from monitor.testbed import namespace_pair

from .alone import alone
from .container import program_stats, program_times, programs_on_one_container

TARGET = 0.95
PASS_SOURCE = Path(__file__).with_name("xdp_pass.bpf.c")
RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("198.18.0.2", 9999))
s.settimeout(1.0)
print("ready", flush=True)
for line in sys.stdin:
    n, first = 0, None
    deadline = time.monotonic() + float(line) + 1.0
    while time.monotonic() < deadline:
        try:
            s.recv(2048)
        except TimeoutError:
            continue
        n += 1
        first = first or time.monotonic()
        last = time.monotonic()
    print(n / (last - first) if n > 1 else 0, flush=True)
"""
SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[1])
payload = b"x" * 64
while time.monotonic() < end:
    for _ in range(256):
        try:
            s.sendto(payload, ("198.18.0.2", 9999))
        except OSError:
            pass
"""


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def deny_rules(count: int) -> list[dict]:
    base = int(ipaddress.ip_address("198.19.0.0"))
    return [{"id": f"block-{i}", "match": {"source_ip": f"{ipaddress.ip_address(base + i)}/32"}, "action": "deny"}
            for i in range(count)]  # fmt: skip


class Arms:
    """The receiver in the second namespace, the sender in the first, the program on or off."""

    def __init__(self, a: str, b: str, prog: str, attach_type: str, seconds: float):
        self.a, self.b, self.prog, self.attach_type, self.seconds = a, b, prog, attach_type, seconds
        self.receiver = subprocess.Popen(in_ns(b, sys.executable, "-c", RECEIVER), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.receiver.stdout.readline().strip() == "ready"

    def set_xdp(self, prog: str | None) -> None:
        """This program (a pinned path) on the receiving veth, or none."""
        if any(item["xdp"] for item in bpftool.run("net", "show", "dev", "ce-b", netns=self.b)):
            bpftool.run("net", "detach", self.attach_type, "dev", "ce-b", json_output=False, netns=self.b)
        if prog:
            bpftool.run("net", "attach", self.attach_type, "pinned", prog, "dev", "ce-b", json_output=False,
                        netns=self.b)  # fmt: skip

    def received(self) -> float:
        """Packets/s the receiver got while the sender sent for `seconds`."""
        self.receiver.stdin.write(f"{self.seconds}\n")
        self.receiver.stdin.flush()
        subprocess.run(in_ns(self.a, sys.executable, "-c", SENDER, str(self.seconds)), check=True)
        return float(self.receiver.stdout.readline())

    def close(self) -> None:
        self.receiver.kill()
        self.receiver.wait()


def measure(arms: Arms, enforcer, rounds: int, passer: str, runs: list | None = None) -> tuple[dict, float, int]:
    """(packets/s per arm per round, packets/s with the sender blocked, drops counted);
    `runs` (with program_stats on) gets crossedge_xdp's (run time ns, runs) in the blocklist arms."""
    programs = {"blocklist": arms.prog, "xdp-pass": passer, "none": None}
    names = list(programs)
    results = {arm: [] for arm in names}
    for r in range(rounds):
        for arm in names[r % 3 :] + names[: r % 3]:
            arms.set_xdp(programs[arm])
            before = program_times(enforcer, ("crossedge_xdp",))["crossedge_xdp"] if runs is not None else None
            results[arm].append(arms.received())
            if before and arm == "blocklist":
                after = program_times(enforcer, ("crossedge_xdp",))["crossedge_xdp"]
                runs.append((after[0] - before[0], after[1] - before[1]))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{x} {results[x][-1]:,.0f} pkt/s" for x in names),
              file=sys.stderr)  # fmt: skip
    arms.set_xdp(arms.prog)
    sender = {"id": "block-sender", "match": {"source_ip": "198.18.0.1/32"}, "action": "deny"}
    enforcer.sync(RuleSet.from_specs([*deny_rules(9_999), sender], 2))
    blocked = arms.received()
    dropped = enforcer.counters().get("block-sender", 0)
    arms.set_xdp(None)
    return results, blocked, dropped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0, help="sending time per arm")
    parser.add_argument("--flood-rule", action="store_true",
                        help="add a SYN flood rule to the blocklist's policy (every packet then also looks its "
                        "source up among the flooding ones)")  # fmt: skip
    parser.add_argument("--prog-stats", action="store_true",
                        help="also measure the program's own run time per packet (bpf_stats)")  # fmt: skip
    parser.add_argument("--mode", choices=("native", "generic"), default="generic",
                        help="XDP mode on the veth (default generic, as the agent chooses for a veth)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes network namespaces and loads eBPF programs")
    tag = uuid.uuid4().hex[:6]
    runs = [] if args.prog_stats else None
    with (
        program_stats() if args.prog_stats else contextlib.nullcontext(),
        namespace_pair(f"bench-{tag}") as (a, b),
        programs_on_one_container("xdp-bench") as (_app, enforcer),
        tempfile.TemporaryDirectory() as work,
    ):
        enforcer.xdp_ifaces = (f"{b}/ce-b",)  # so that uninstall takes it off
        flood = [{"id": "flood", "match": {}, "limit": {"syn_per_source": 100_000}, "action": "deny"}]
        enforcer.sync(RuleSet.from_specs(deny_rules(10_000) + (flood if args.flood_rule else []), 1))
        attach_type = "xdpdrv" if args.mode == "native" else "xdpgeneric"
        arms = Arms(a, b, enforcer.layout.prog("crossedge_xdp"), attach_type, args.seconds)
        passer = f"{enforcer.pin_root}/xdp-pass"
        try:
            subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{PASS_SOURCE.parents[1] / 'bpfscripts'}", "-c",
                            str(PASS_SOURCE), "-o", f"{work}/pass.o"], check=True)  # fmt: skip
            bpftool.run("prog", "load", f"{work}/pass.o", passer, json_output=False)
            results, blocked, dropped = measure(arms, enforcer, args.rounds, passer, runs)
        finally:
            arms.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(passer)
    base = statistics.median(results["none"])
    ratio = statistics.median(results["blocklist"]) / base
    paired = statistics.median(x / y for x, y in zip(results["blocklist"], results["none"], strict=True))
    print(f"\nUDP 64-byte datagrams between two namespaces ({args.mode} XDP), {args.rounds} interleaved rounds x "
          f"{args.seconds:g} s, medians of packets/s received:")  # fmt: skip
    for arm, values in results.items():
        print(f"{arm:<10}{statistics.median(values):>12,.0f} pkt/s")
    with_flood = " and a SYN flood rule" if args.flood_rule else ""
    print(f"\nblocklist (10,000 entries{with_flood}) / none = {ratio:.3f} ({'meets' if ratio >= TARGET else 'MISSES'} "
          f">= {TARGET:.2f}); median of the rounds' own ratios {paired:.3f}")  # fmt: skip
    empty = statistics.median(results["xdp-pass"]) / base
    lookup = statistics.median(results["blocklist"]) / statistics.median(results["xdp-pass"])
    print(f"an XDP program that only passes / none = {empty:.3f}; blocklist / that program = {lookup:.3f}")
    print(f"with the sender blocked: {blocked:,.0f} pkt/s received, {dropped:,} packets dropped and counted")
    if runs:
        per_packet = sum(ns for ns, _ in runs) / max(1, sum(n for _, n in runs))
        print(f"crossedge_xdp's own run time (kernel.bpf_stats_enabled): {per_packet:,.0f} ns a packet; at the "
              f"no-program rate that is {per_packet * base / 1e9:.1%} of one CPU")  # fmt: skip
    return 0 if ratio >= TARGET and blocked == 0 and dropped > 0 else 1


if __name__ == "__main__":
    alone()
    sys.exit(main())
