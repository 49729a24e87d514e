"""Simulated containers for the demo and the kernel tests.

The demo and the cheap kernel tests need no container engine, so a "container" here is
what the agent actually sees of one (tests/kernel/test_runtimes.py runs real Docker and
Podman): a cgroup2 directory named like a runtime scope
(`<parent>/docker-<64 hex>.scope`), Docker-style metadata giving it a name, and
processes that live in it. Everything is made under a parent cgroup of our own, never
the root, and `remove()` takes down only what `create()` and `spawn()` made.

`python -m monitor.testbed connect --every 3 127.8.8.8:80 ...` is the demo's client;
`python -m monitor.testbed resolve SERVER NAME PORT` asks a DNS server for a name and
connects to the answer (printing "address errno"), and `DnsServer` is the loopback DNS
server the demo and the tests ask: no query ever leaves the machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from .cgroups import cgroup2_mount, cgroup_id

_MADE_PARENTS: set[str] = set()  # parent cgroups this process created, removed once empty


CLONE_NEWNS = 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)


class SimulatedContainer:
    def __init__(self, name: str, parent: str, docker_root: str, runtime_prefix: str = "docker"):
        if not parent or parent.strip("/") == "":
            raise ValueError("a simulated container needs a parent cgroup of its own, not the root")
        self.name = name
        self.id = hashlib.sha256(f"{parent}/{name}".encode()).hexdigest()
        self.parent_dir = os.path.join(cgroup2_mount(), parent.strip("/"))
        self.dir = os.path.join(self.parent_dir, f"{runtime_prefix}-{self.id}.scope")
        self.meta_dir = os.path.join(docker_root, "containers", self.id)
        self.procs: list[subprocess.Popen] = []

    @property
    def cgroup_path(self) -> str:
        return "/" + os.path.relpath(self.dir, cgroup2_mount())

    @property
    def cgroup_id(self) -> int:
        return cgroup_id(self.dir)

    def create(self) -> SimulatedContainer:
        if not os.path.isdir(self.parent_dir):
            os.mkdir(self.parent_dir)
            _MADE_PARENTS.add(self.parent_dir)
        os.makedirs(self.meta_dir, exist_ok=True)  # metadata first, as Docker writes it at create
        with open(os.path.join(self.meta_dir, "config.v2.json"), "w") as fh:
            json.dump({"ID": self.id, "Name": f"/{self.name}", "Config": {"Labels": {"crossedge.sim": "1"}}}, fh)
        os.makedirs(self.dir, exist_ok=True)
        return self

    def spawn(self, argv: list[str], **popen) -> subprocess.Popen:
        """Start a process inside this container's cgroup (it joins before it execs)."""
        procs_file = os.path.join(self.dir, "cgroup.procs")

        def join():
            with open(procs_file, "w") as fh:
                fh.write(str(os.getpid()))
            _libc.unshare(CLONE_NEWNS)  # a mount namespace of its own, as a container has (best effort)

        proc = subprocess.Popen(argv, preexec_fn=join, **popen)
        self.procs.append(proc)
        return proc

    def remove(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for _ in range(50):  # a reaped process leaves its cgroup a moment later
            try:
                os.rmdir(self.dir)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if self.parent_dir in _MADE_PARENTS:
            try:
                os.rmdir(self.parent_dir)
                _MADE_PARENTS.discard(self.parent_dir)
            except OSError:
                pass  # another container of ours still lives there
        shutil.rmtree(self.meta_dir, ignore_errors=True)

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.remove()


def connect_once(host: str, port: int) -> int:
    """One blocking TCP connect (so the kernel reports its final result, not EINPROGRESS);
    0 or the errno. Targets are on loopback or a test's own netns: they answer at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port))


def listen(host: str, port: int) -> socket.socket:
    """A loopback listener that accepts and closes, so connects to it succeed. Close it to stop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock


@contextlib.contextmanager
def namespace_pair(tag: str, a: str = "198.18.0.1", b: str = "198.18.0.2"):
    """Two network namespaces of our own (ce-<tag>-a, ce-<tag>-b) joined by a veth pair
    (ce-a, ce-b) with addresses from 198.18.0.0/15, for traffic that never leaves them;
    yields their names, removes both afterwards."""
    names = (f"ce-{tag}-a", f"ce-{tag}-b")
    try:
        for ns in names:
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run(["ip", "link", "add", "ce-a", "netns", names[0], "type", "veth", "peer", "name", "ce-b",
                        "netns", names[1]], check=True, capture_output=True)  # fmt: skip
        for ns, dev, addr in ((names[0], "ce-a", a), (names[1], "ce-b", b)):
            for argv in (
                ["addr", "add", f"{addr}/24", "dev", dev],
                ["link", "set", dev, "up"],
                ["link", "set", "lo", "up"],
            ):
                subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True)
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _dnspython():
    """dnspython, imported when a DNS part runs: the connect client needs only the standard
    library (tests run it with Debian's python3)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    return dns


class DnsServer:
    """A DNS server on a loopback address (UDP and TCP) answering A and AAAA questions for
    the names it was given, NXDOMAIN for the rest. For the demo and the tests only: it
    holds what they set, forwards nothing."""

    def __init__(self, host: str = "127.53.53.53", port: int = 53, ttl: int = 30):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("the test DNS server listens on loopback only")
        self.host, self.port, self.ttl = host, port, ttl
        self.records: dict[str, tuple[list[str], int]] = {}
        self.answered = 0
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.port = self.udp.getsockname()[1]  # the one chosen, for port 0
        self.tcp = socket.create_server((host, self.port), family=family)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        self.records[name.lower().rstrip(".")] = (list(addresses), self.ttl if ttl is None else ttl)

    def answer(self, wire: bytes) -> bytes:
        dns = _dnspython()
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        addresses, ttl = self.records.get(question.name.to_text(omit_final_dot=True).lower(), (None, 0))
        if addresses is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            version = 6 if question.rdtype == dns.rdatatype.AAAA else 4
            found = [a for a in addresses if ipaddress.ip_address(a).version == version]
            if found:
                rdtype = dns.rdatatype.AAAA if version == 6 else dns.rdatatype.A
                response.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", rdtype, found))
        self.answered += 1
        return response.to_wire()

    def _serve(self) -> None:
        dns = _dnspython()
        with selectors.DefaultSelector() as sel:
            sel.register(self.udp, selectors.EVENT_READ)
            sel.register(self.tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    try:
                        if key.fileobj is self.udp:
                            wire, peer = self.udp.recvfrom(65535)
                            self.udp.sendto(self.answer(wire), peer)
                        else:
                            self._serve_tcp()
                    except (OSError, ValueError, dns.exception.DNSException):
                        continue  # one bad query or peer: the next is answered

    def _serve_tcp(self) -> None:
        conn, _ = self.tcp.accept()
        with conn:
            conn.settimeout(2)
            (length,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
            reply = self.answer(conn.recv(length, socket.MSG_WAITALL))
            conn.sendall(struct.pack("!H", len(reply)) + reply)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.udp.close()
        self.tcp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def resolve_and_connect(
    server: str, name: str, port: int, tcp: bool = False, v6: bool = False, dns_port: int = 53
) -> tuple[str, int]:
    """Ask `server` for name, then connect to the first address of the answer at once:
    (address, 0 or the errno); ("", 0) when the name has no address."""
    dns = _dnspython()
    query = dns.message.make_query(name, "AAAA" if v6 else "A")
    ask = dns.query.tcp if tcp else dns.query.udp
    response = ask(query, server, timeout=5, port=dns_port)
    addresses = [rd.address for rrset in response.answer for rd in rrset if hasattr(rd, "address")]
    if not addresses:
        return "", 0
    return addresses[0], connect_once(addresses[0], port)


def scan(host: str, first: int, count: int, pause: float = 0.0) -> collections.Counter:
    """connect() to `count` ports from `first` on (closed ones answer at once on loopback):
    how many calls ended in each errno (0: connected)."""
    outcomes = collections.Counter()
    for port in range(first, first + count):
        outcomes[connect_once(host, port)] += 1
        if pause:
            time.sleep(pause)
    return outcomes


def sink(host: str = "127.0.0.1") -> None:
    """Read and drop whatever each connection sends, one at a time, printing the port first."""
    srv = socket.create_server((host, 0))
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            while conn.recv(1 << 20):
                pass


def start_sink(host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    """A bulk transfer's far end in a process of its own (off the caller's GIL): the process
    and its port; kill it when done."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "monitor.testbed", "sink", host], cwd=root,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    return proc, int(proc.stdout.readline())


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monitor.testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmd = sub.add_parser("connect", help="connect to each target, repeatedly")
    cmd.add_argument("targets", nargs="+", help="HOST:PORT, [V6]:PORT")
    cmd.add_argument("--every", type=float, default=0, help="seconds between rounds (0: one round)")
    res = sub.add_parser("resolve", help="ask a DNS server for names, connect to each answer at once")
    res.add_argument("server", help="the DNS server's address (loopback)")
    res.add_argument("port", type=int, help="the port to connect to")
    res.add_argument("names", nargs="+")
    res.add_argument("--tcp", action="store_true", help="ask over TCP")
    res.add_argument("--v6", action="store_true", help="ask for AAAA")
    res.add_argument("--every", type=float, default=0, help="seconds between rounds (0: one round)")
    sc = sub.add_parser("scan", help="connect to many ports of one host (a port scan); print errno counts as JSON")
    sc.add_argument("host", help="a loopback address")
    sc.add_argument("first", type=int, help="the first port")
    sc.add_argument("count", type=int, help="ports to try")
    sc.add_argument("--pause", type=float, default=0, help="seconds between connects")
    sk = sub.add_parser("sink", help="accept connections and drop what they send; print the port first")
    sk.add_argument("host", nargs="?", default="127.0.0.1")
    args = parser.parse_args(argv)
    if args.cmd == "sink":
        sink(args.host)
        return
    if args.cmd == "scan":
        print(json.dumps(scan(args.host, args.first, args.count, args.pause)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.cmd == "resolve":
        while True:
            for name in args.names:
                address, errno = resolve_and_connect(args.server, name, args.port, args.tcp, args.v6)
                print(address or "-", errno, flush=True)
            if not args.every:
                return
            time.sleep(args.every)
    targets = [parse_target(t) for t in args.targets]
    while True:
        for host, port in targets:
            connect_once(host, port)
        if not args.every:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
