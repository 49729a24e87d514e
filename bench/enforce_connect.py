"""Loopback connect() throughput with the connect4/6 programs (observing and enforcing),
against none, in one run; optionally against the syscall tracer, connect.bt.

    sudo .venv/bin/python -m bench.enforce_connect [--rounds 9] [--connects 3000] [--udp | --sendto] [--tracer]

Three cgroups of our own, measured in rotating order each round (these machines are
noisy: the arms are interleaved and the medians compared): one with no program, one with
the programs and 10 deny entries, one with the programs and 10,000 deny entries (two
separate pin roots, so each has its own maps). The programs also observe: every call is
sent to a perf buffer or counted with its flow (nobody reads the buffer here, so after
the first calls they are counted, which is what a busy flow costs). --tracer adds a
fourth arm: the no-program cgroup while bpftrace runs bpfscripts/connect.bt (started
before and stopped after that arm's run, each round). Each arm is a fresh process
inside its cgroup doing N blocking TCP connects to a loopback listener (RST on close, so
no TIME_WAIT pile-up); the deny entries are for other 127/8 addresses, so every connect
is looked up and allowed. --udp measures UDP connect(), which runs the same hook with
almost no other work: the program's cost with nothing to hide it. --sendto measures
datagrams sent with an address from one unconnected UDP socket (the sendmsg4 program runs
for each one, as for a DNS client's queries).

Target (issue 3): throughput with 10,000 entries >= 0.90 of no program.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from monitor.kernel.enforcer import Enforcer
from monitor.rules import RuleSet
from monitor.testbed import SimulatedContainer

from .alone import alone
from .loopback import start_listener

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.90
WORKER = r"""
import socket, struct, sys, time
host, port, n, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
linger = struct.pack("ii", 1, 0)
typ = socket.SOCK_DGRAM if kind in ("udp", "sendto") else socket.SOCK_STREAM
start = time.perf_counter()
if kind == "sendto":
    s = socket.socket(socket.AF_INET, typ)
    for _ in range(n):
        s.sendto(b"x", (host, port))
    n = 0
for _ in range(n):
    s = socket.socket(socket.AF_INET, typ)
    if typ == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect((host, port))
    s.close()
print(int(sys.argv[3]) / (time.perf_counter() - start))
"""


def deny_rules(count: int) -> RuleSet:
    """`count` deny rules on distinct /32s in 127.200.0.0/14, none of them the target."""
    base = int(ipaddress.ip_address("127.200.0.0"))
    specs = [
        {"id": f"deny-{i}", "match": {"dest_ip": f"{ipaddress.ip_address(base + i)}/32"}, "action": "deny"}
        for i in range(count)
    ]
    return RuleSet.from_specs(specs, 1)


def measure(container: SimulatedContainer, port: int, connects: int, kind: str) -> float:
    proc = container.spawn(
        [sys.executable, "-c", WORKER, "127.0.0.1", str(port), str(connects), kind],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"worker in {container.name} failed (status {proc.returncode})")
    return float(out)


class Tracer:
    """connect.bt running for the length of a with-block (attached when its first line comes)."""

    def __enter__(self):
        script = str(ROOT / "bpfscripts" / "connect.bt")
        self.proc = subprocess.Popen(["bpftrace", "-B", "line", "-f", "json", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        if b"attached_probes" not in self.proc.stdout.readline():
            raise RuntimeError("connect.bt did not attach")
        self.drain = threading.Thread(target=self.proc.stdout.read, daemon=True)  # never let its pipe fill
        self.drain.start()
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        self.drain.join(5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--connects", type=int, default=3000, help="connects per arm per round")
    parser.add_argument("--udp", action="store_true", help="UDP connect() instead of TCP")
    parser.add_argument("--sendto", action="store_true", help="UDP sendto() on one unconnected socket instead")
    parser.add_argument("--tracer", action="store_true", help="add an arm with connect.bt (bpftrace) running")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes cgroups and loads eBPF programs")
    kind = "sendto" if args.sendto else "udp" if args.udp else "tcp"

    tag = uuid.uuid4().hex[:8]
    parent = f"crossedge-bench-{tag}.slice"
    meta = tempfile.mkdtemp(prefix="crossedge-bench-")
    arms = {name: SimulatedContainer(name, parent, meta) for name in ("no-program", "10-entries", "10000-entries")}
    enforcers = {}
    listener = None
    try:
        for c in arms.values():
            c.create()
        for name, count in (("10-entries", 10), ("10000-entries", 10_000)):
            e = Enforcer(pin_root=f"/sys/fs/bpf/crossedge-bench-{tag}-{count}", scope=arms[name].cgroup_path)
            enforcers[name] = e
            e.start()
            e.sync(deny_rules(count))
            assert e.policy_version == 1 and e.targets == [arms[name].cgroup_path], e.health()
            print(f"{name}: {sum(e.health()['entries'].values())} entries in the kernel maps", file=sys.stderr)
        port = 9  # discard: UDP needs no listener
        if kind == "tcp":
            listener, port = start_listener()
        names = list(arms) + (["connect.bt"] if args.tracer else [])
        results = {name: [] for name in names}
        measure(arms["no-program"], port, min(500, args.connects), kind)  # warm caches
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                if name == "connect.bt":
                    with Tracer():
                        results[name].append(measure(arms["no-program"], port, args.connects, kind))
                else:
                    results[name].append(measure(arms[name], port, args.connects, kind))
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {results[n][-1]:,.0f}/s" for n in names),
                file=sys.stderr,
            )
        base = statistics.median(results["no-program"])
        call = "UDP sendto()" if kind == "sendto" else f"{kind.upper()} connect()"
        unit = "datagrams/s" if kind == "sendto" else "connects/s"
        print(f"\nloopback {call} throughput, {args.rounds} interleaved rounds x {args.connects} calls, medians:")
        print(f"{'arm':<16}{unit:>14}{'ratio':>8}")
        for name in names:
            med = statistics.median(results[name])
            print(f"{name:<16}{med:>14,.0f}{med / base:>8.3f}")
        ratio = statistics.median(results["10000-entries"]) / base
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"\n10,000 entries / no program = {ratio:.3f}: {verdict} the target of >= {TARGET:.2f}")
        return 0 if ratio >= TARGET else 1
    finally:
        if listener:
            listener.kill()
            listener.wait()
        for e in enforcers.values():
            e.uninstall()
        for c in arms.values():
            c.remove()
        shutil.rmtree(meta, ignore_errors=True)


if __name__ == "__main__":
    alone()
    sys.exit(main())
