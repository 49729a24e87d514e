"""Sockets that send past the connect() and sendto() judges, on the real kernel: raw IP,
AF_PACKET, ICMP "ping" and SCTP sockets are refused at creation in the containers a socket
rule names (socket() fails with EPERM; a packet socket's caller is killed, as no cgroup hook
sees one made), also through IPv6, io_uring and a second process, and every one a monitored
container makes is reported. Real Docker and Podman too."""

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import ProcessEvent, Violation
from monitor.kernel.enforcer import PACKET
from monitor.rules import RuleSet

from .conftest import ROOT, deliver_until, runtime_agent
from .test_dns_names import run_agent
from .test_enforce_agent import stop
from .test_first_call import cgroups_made

pytestmark = pytest.mark.kernel
EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT, KILLED = 1, 93, 94, -9

# (family, type, protocol) of each kind, as an attacker would ask
RAW = [
    ("AF_INET", "SOCK_RAW", "IPPROTO_ICMP"),
    ("AF_INET", "SOCK_RAW", "IPPROTO_RAW"),
    ("AF_INET6", "SOCK_RAW", "IPPROTO_ICMPV6"),
    ("AF_INET", "SOCK_RAW|SOCK_CLOEXEC|SOCK_NONBLOCK", "IPPROTO_UDP"),
]
PING = [("AF_INET", "SOCK_DGRAM", "IPPROTO_ICMP"), ("AF_INET6", "SOCK_DGRAM", "IPPROTO_ICMPV6")]
PACKET_ARGS = [("AF_PACKET", "SOCK_RAW", "0"), ("AF_PACKET", "SOCK_DGRAM", "0")]
SCTP = [("AF_INET", "SOCK_STREAM", "132"), ("AF_INET6", "SOCK_SEQPACKET", "132")]
UDP = ("AF_INET", "SOCK_DGRAM", "0")
NET_RAW = ("--cap-add", "NET_RAW")  # Docker's default; Podman 4's defaults leave it out

# One socket() per argument triple, printing 0 or the errno; ping sockets need the group range
# that Docker sets in a container's own network namespace (here: one of the test's own)
MAKE = """
import os, socket, sys
def num(text):
    return eval(text, vars(socket)) if not text.isdigit() else int(text)
if os.environ.get("PING_NETNS"):
    open("/proc/sys/net/ipv4/ping_group_range", "w").write("0 2147483647")
for family, kind, proto in zip(*[iter(sys.argv[1:])] * 3):
    try:
        socket.socket(num(family), num(kind), num(proto)).close()
        print(0, flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
"""


def make(container, *triples, netns: bool = False) -> tuple[int, list[int]]:
    """(exit status, the errno of each socket() it got to) from inside the container."""
    argv = [sys.executable, "-c", MAKE, *[a for t in triples for a in t]]
    if netns:
        argv = ["unshare", "--net", *argv]
    env = {**os.environ, "PING_NETNS": "1"} if netns else None
    proc = container.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, KILLED), err.decode()
    return proc.returncode, [int(x) for x in out.split()]


def rules(container: str, *kinds: str, action: str = "deny") -> list[dict]:
    return [{"id": f"sock-{action}", "match": {"container": container, "socket": list(kinds)}, "action": action}]


def test_raw_and_ping_sockets_are_refused_at_creation_only_where_the_rule_applies(enforcement):
    app, other = enforcement.container("sock-app"), enforcement.container("sock-other")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(rules("sock-app", "raw", "icmp", "sctp"), 1))
    assert make(other, *RAW) == (0, [0] * len(RAW)), "another container's raw sockets are its own business"
    assert make(app, *RAW, UDP) == (0, [EPERM] * len(RAW) + [0]), "every spelling of a raw socket, and no other"
    # ping sockets exist only where the group range allows them (Docker's netns do): in a netns of the test's own
    assert make(other, *PING, netns=True) == (0, [0, 0])
    assert make(app, *PING, netns=True) == (0, [EPERM, EPERM])
    # SCTP: this kernel has none (no module), so no such socket can be made, rule or not
    unsupported = (EPROTONOSUPPORT, ESOCKTNOSUPPORT)
    assert all(err in unsupported for err in make(other, *SCTP)[1]), "this kernel has SCTP now: test the deny"
    assert all(err in (EPERM, *unsupported) for err in make(app, *SCTP)[1])
    counters = enforcement.enforcer.counters()
    assert counters["sock-deny"] == len(RAW) + 2
    # the rule gone, the sockets are let be
    enforcement.enforcer.sync(RuleSet.from_specs([], 2))
    assert make(app, *RAW[:1]) == (0, [0])


def test_a_packet_socket_kills_its_maker_and_the_hook_is_there_only_while_a_rule_names_it(enforcement):
    app, other = enforcement.container("pkt-app"), enforcement.container("pkt-other")
    enforcer = enforcement.enforcer
    enforcer.start()
    link = enforcer.layout.link(PACKET)
    enforcer.sync(RuleSet.from_specs(rules("pkt-app", "raw"), 1))
    assert not os.path.exists(link), "no rule names packet sockets: no program on every system call"
    assert make(app, *PACKET_ARGS) == (0, [0, 0])
    enforcer.sync(RuleSet.from_specs(rules("pkt-app", "packet"), 2))
    assert os.path.exists(link)
    assert make(other, *PACKET_ARGS) == (0, [0, 0])
    assert make(app, *PACKET_ARGS) == (KILLED, []), "killed at socket()"
    # the other ways to a packet socket: the obsolete (AF_INET, SOCK_PACKET), and AF_XDP
    for spelling in (("AF_INET", "10", "768"), ("44", "SOCK_RAW", "0")):  # (10: SOCK_PACKET)
        assert make(other, spelling)[0] == 0
        assert make(app, spelling) == (KILLED, []), spelling
    assert make(app, UDP) == (0, [0])
    assert enforcer.counters()["sock-deny"] == 3
    enforcer.sync(RuleSet.from_specs([], 3))
    assert not os.path.exists(link)
    assert make(app, *PACKET_ARGS) == (0, [0, 0])


URING_SOCKET = """
import ctypes, mmap, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
ring = libc.syscall(425, 8, params)  # io_uring_setup
print(ring if ring < 0 else 0, flush=True)
"""


def test_io_uring_cannot_make_the_packet_socket_socket_would_not(enforcement):
    """IORING_OP_SOCKET makes a socket with no socket() call: where a packet deny applies,
    io_uring_setup() itself is refused (its caller killed), as under an open deny."""
    app, other = enforcement.container("uring-app"), enforcement.container("uring-other")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(rules("uring-app", "packet"), 1))
    for container, status in ((other, 0), (app, KILLED)):
        proc = container.spawn([sys.executable, "-c", URING_SOCKET], stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == status, out
    assert enforcement.enforcer.counters()["sock-deny"] == 1


@pytest.mark.django_db(transaction=True)
async def test_the_agent_reports_every_such_socket_and_raises_the_rules(enforcement, tmp_path):
    from dashboard.fleet.models import Node
    from monitor.agent import Agent

    node = await sync_to_async(Node.objects.create)(name="sockets", token_hash="5" * 64)
    app = enforcement.container("sock-agent")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, rules("sock-agent", "raw") + rules("sock-agent", "packet", action="alert"))
    runner = await run_agent(agent)
    try:
        assert await asyncio.to_thread(make, app, RAW[0], PACKET_ARGS[0], UDP) == (0, [EPERM, 0, 0])
        for _ in range(3):  # a loop making sockets: one record a window, with its count
            assert await asyncio.to_thread(make, app, PACKET_ARGS[0]) == (0, [0])

        def seen():
            return ProcessEvent.objects.filter(kind="socket").count() >= 2 and Violation.objects.count() >= 2

        await deliver_until(agent, node, seen, timeout=10)
        await agent.read_kernel_tables(final=True)  # the groups' counts
        await deliver_until(agent, node, lambda: sum(ProcessEvent.objects.filter(
            kind="socket", path__startswith="packet").values_list("count", flat=True)) >= 4, timeout=10)  # fmt: skip
    finally:
        await stop(runner)
    raw = await ProcessEvent.objects.select_related("container").aget(kind="socket", path__startswith="raw")
    assert raw.path == "raw socket (IPv4, raw, protocol 1)" and raw.result == -EPERM
    assert (raw.verdict, raw.rule_id, raw.enforced, raw.container.name) == ("deny", "sock-deny", True, "sock-agent")
    assert raw.binary == sys.executable or raw.binary.startswith("/usr/bin/python")
    packet = await ProcessEvent.objects.filter(kind="socket", path__startswith="packet").afirst()
    assert packet.path == "packet socket (AF_PACKET, raw, protocol 0)" and packet.verdict == "alert"
    violations = {v.rule_id: v async for v in Violation.objects.filter(kind="socket")}
    assert violations["sock-deny"].target == "raw socket (IPv4, raw, protocol 1)" and violations["sock-deny"].enforced
    assert not await ProcessEvent.objects.filter(kind="socket", path__contains="datagram, protocol 0").aexists()


@pytest.mark.django_db(transaction=True)
async def test_in_real_containers_raw_and_packet_sockets_are_refused(runtime, enforcement):
    """Docker gives a container CAP_NET_RAW (Podman 4 on request): with the rule, its raw
    socket fails with EPERM and its packet socket kills its maker; another's are let be."""
    tag = uuid.uuid4().hex[:6]
    name, other = f"rawsock-{tag}", f"fine-{tag}"
    node, agent = await runtime_agent(runtime, enforcement, "rtsock", rules("rawsock-*", "raw", "packet"))
    script = "/bin/netprobe socket raw; /bin/netprobe socket packet; echo status $?"
    with cgroups_made(enforcement.enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script], options=NET_RAW)
            assert done.stdout.decode().split("\n")[:2] == [str(EPERM), "status 137"], done.stderr.decode()
            fine = await asyncio.to_thread(runtime.run, other, ["/bin/sh", "-c", script], options=NET_RAW)
            assert fine.stdout.decode().split("\n")[:3] == ["0", "0", "status 0"], fine.stderr.decode()

            def raised():
                return Violation.objects.filter(kind="socket", container__name=name).count() >= 2

            await deliver_until(agent, node, raised, timeout=10)
        finally:
            await stop(runner)
    targets = sorted([v.target async for v in Violation.objects.filter(kind="socket", container__name=name)])
    assert targets == ["packet socket (AF_PACKET, raw, protocol 768)", "raw socket (IPv4, raw, protocol 1)"]


# Sends from sockets no connect() or sendto() judge sees: a raw socket's own UDP datagram and
# ICMP echo, and (in a netns of its own, where ping sockets are allowed) a ping socket's echo.
SEND = """
import os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
echo = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
echo = echo[:2] + struct.pack("!H", checksum(echo)) + echo[4:]
payload = b"exfiltrated"
sends = [(socket.SOCK_RAW, socket.IPPROTO_UDP, struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload),
         (socket.SOCK_RAW, socket.IPPROTO_ICMP, echo)]
if os.environ.get("PING_NETNS"):
    os.system("ip link set lo up")
    open("/proc/sys/net/ipv4/ping_group_range", "w").write("0 2147483647")
    sends = [(socket.SOCK_DGRAM, socket.IPPROTO_ICMP, echo)]
for kind, proto, data in sends:
    try:
        socket.socket(socket.AF_INET, kind, proto).sendto(data, (host, 0))
        print(0, flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
"""


def send(container, host: str, port: int, netns: bool = False) -> list[int]:
    argv = [sys.executable, "-c", SEND, host, str(port)]
    env = {**os.environ, "PING_NETNS": "1"} if netns else None
    proc = container.spawn(["unshare", "--net", *argv] if netns else argv, stdout=subprocess.PIPE, env=env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return [int(x) for x in out.split()]


def test_no_packet_of_a_raw_or_ping_socket_reaches_a_denied_destination(enforcement):
    """The egress program judges what the call hooks never see: a raw socket's UDP datagram
    and ICMP echo to a denied address are dropped (sendto() fails with EPERM, nothing
    arrives); a rule's port holds for a raw socket's UDP too; another address is reached."""
    import socket

    app = enforcement.container("egress-raw")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.10.10.5", 0))
    sink.settimeout(0.5)
    port = sink.getsockname()[1]
    open_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    open_sink.bind(("127.10.10.6", port))
    open_sink.settimeout(2)
    policy = [
        {"id": "deny-exfil", "match": {"container": "egress-raw", "dest_ip": "127.10.10.5/32"}, "action": "deny"},
        {"id": "deny-port", "match": {"dest_ip": "127.10.10.7/32", "dest_port": port}, "action": "deny"},
    ]
    try:
        enforcement.enforcer.start()
        enforcement.enforcer.sync(RuleSet.from_specs(policy, 1))
        assert send(app, "127.10.10.5", port) == [EPERM, EPERM], "raw UDP and raw ICMP to the denied address"
        with pytest.raises(TimeoutError):
            sink.recv(100)
        assert send(app, "127.10.10.6", port) == [0, 0]
        assert open_sink.recv(100) == b"exfiltrated", "another address is reached"
        assert send(app, "127.10.10.7", port) == [EPERM, 0], "the port rule: the UDP datagram only"
        assert send(app, "127.10.10.5", port, netns=True) == [EPERM], "a ping socket's echo (its own netns)"
        counters = enforcement.enforcer.counters()
        assert counters["deny-exfil"] == 3 and counters["deny-port"] == 1
    finally:
        sink.close()
        open_sink.close()


ATTACK = Path(__file__).with_name("attack.c")


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    """tests/kernel/attack.c, built static."""
    out = tmp_path_factory.mktemp("attack") / "attack"
    subprocess.run(["clang", "-O2", "-static", "-Wall", "-o", str(out), str(ATTACK)], check=True)
    return str(out)


def run(container, *argv) -> tuple[int, str]:
    proc = container.spawn(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out.decode().strip()


def test_a_packet_deny_refuses_what_would_make_or_lend_a_packet_socket_unseen(enforcement, attack, tmp_path):
    """The kill at socket() takes effect as the call returns; so, as under an open deny, the
    calls that would let another process use a killed maker's descriptors, or make a packet
    socket no socket() tracepoint shows, are refused where a packet deny applies (and only
    there): clone(CLONE_FILES) (the child is killed), pidfd_getfd(), io_uring_setup() and a
    32-bit socket() (int 0x80)."""
    app, other = enforcement.container("lend-app"), enforcement.container("lend-other")
    plain = tmp_path / "plain"
    plain.write_text("plain\n")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(rules("lend-app", "packet"), 1))
    assert run(app, attack, "clonefiles", str(plain)) == (0, "child killed 9 fd 3")
    assert run(other, attack, "clonefiles", str(plain)) == (0, "child read plain\n\nchild exited 0 fd 3")
    for argv in (("getfd", str(plain)), ("uring",), ("int80socket",)):
        assert run(app, attack, *argv) == (KILLED, ""), argv
    assert run(other, attack, "int80socket") == (0, "socket")
    assert run(other, attack, "getfd", str(plain)) == (0, "plain")
