"""Names an attacker cannot bend, on the real kernel: after a real answer named 127.20.0.2
blocked.test (a deny), a container tries to have the kernel name that address otherwise with
a forged answer: from a resolver the node does not trust, from a trusted resolver's address
it bound in its own namespace, with a raw socket claiming the real resolver's address and
the query's own id and question, and from a neighbour's TCP segment sent from port 53. Each
teaches nothing: the next connect() is still refused. Real Docker and Podman containers too,
and the agent raises each as a violation."""

import asyncio
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from dashboard.events.models import Violation
from monitor.rules import RuleSet

from .conftest import DNS_SERVER, ROOT, deliver_until, runtime_agent
from .test_dns_names import connect_in, resolve_in, run_agent
from .test_enforce_agent import stop
from .test_first_call import cgroups_made

pytestmark = pytest.mark.kernel
EPERM = 1
FORGE = Path(__file__).with_name("dnsforge.py")
BLOCKED = "127.20.0.2"  # blocked.test, by the test's resolver
RULES = [{"id": "deny-blocked", "match": {"dest_fqdn": "blocked.test"}, "action": "deny"}]


def forge(container, *args: str) -> str:
    proc = container.spawn([sys.executable, str(FORGE), *args], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


@pytest.fixture
def named(enforcement, resolver):
    """A container whose resolver named 127.20.0.2 blocked.test: its connect() there is refused."""
    app = enforcement.container("dns-victim")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet.from_specs(RULES, 1))
    assert resolve_in(app, resolver.port, "blocked.test") == [(BLOCKED, EPERM)]
    return app


@pytest.mark.parametrize(
    "attack, outcome",
    [
        (("untrusted", "ok.test", BLOCKED), "received"),  # delivered, learned from nothing
        (("as-resolver", "127.0.0.11", "ok.test", BLOCKED), "refused"),  # Docker's resolver address, free here
        (("raw", DNS_SERVER, "nothing.test", BLOCKED), "refused"),  # the real resolver's, by a raw socket
        (("gso", "127.0.0.11", "ok.test", BLOCKED), "refused"),  # a UDP GSO packet: a query, then the answer
        (("frag", DNS_SERVER, "nothing.test", BLOCKED), "refused"),  # IPv4 fragments: the ports, then the rest
    ],
    ids=["untrusted-resolver", "bound-as-resolver", "raw-socket-as-resolver", "gso-as-resolver", "fragments"],
)
def test_a_container_cannot_rename_an_address_by_answering_itself(enforcement, resolver, named, attack, outcome):
    before = enforcement.enforcer.dns_stats()
    assert forge(named, *attack) == outcome
    assert connect_in(named, BLOCKED, resolver.port) == EPERM, "the forged name was learned"
    stats = enforcement.enforcer.dns_stats()
    if outcome == "refused":
        assert stats["forged"] >= before["forged"] + 1
    else:
        assert stats["unmatched"] == before["unmatched"] + 1
    # and its real queries are still learned from
    assert resolve_in(named, resolver.port, "ok.test") == [("127.20.0.3", 0)]


def test_a_neighbours_tcp_segment_from_port_53_teaches_nothing(enforcement, resolver, named):
    """One TCP segment from port 53 at any port of another container."""
    neighbour = enforcement.container("dns-neighbour")
    listener = named.spawn([sys.executable, str(FORGE), "listen"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = listener.stdout.readline().strip()
        assert forge(neighbour, "tcp-at", "127.0.0.1", port, "ok.test", BLOCKED) == "sent"
        assert listener.wait(timeout=10) == 0 and listener.stdout.read().strip() == "received"
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert connect_in(named, BLOCKED, resolver.port) == EPERM, "a neighbour renamed the address"
    assert enforcement.enforcer.dns_stats()["unmatched"] >= 1


@pytest.mark.django_db(transaction=True)
async def test_the_agent_raises_forged_and_unsolicited_answers(enforcement, resolver, tmp_path):
    from dashboard.fleet.models import Node
    from monitor.agent import Agent

    node = await sync_to_async(Node.objects.create)(name="dns-forgery", token_hash="f" * 64)
    app = enforcement.container("dns-forger")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, RULES)
    runner = await run_agent(agent)
    try:
        for _ in range(3):  # three of a kind in a window: one violation, counted
            assert await sync_to_async(forge)(app, "untrusted", "ok.test", BLOCKED) == "received"
        assert await sync_to_async(forge)(app, "as-resolver", "127.0.0.11", "ok.test", BLOCKED) == "refused"

        def raised():
            return Violation.objects.filter(kind="dns").count() >= 2

        await deliver_until(agent, node, raised, timeout=10)
        await agent.read_kernel_tables(final=True)  # the rest of the window, as when the agent stops
        await deliver_until(agent, node, lambda: Violation.objects.filter(kind="dns").count() >= 3, timeout=10)
        rows = [v async for v in Violation.objects.filter(kind="dns").select_related("container").order_by("id")]
        untrusted = [v for v in rows if v.rule_id == "dns-untrusted"]
        assert sum(v.count for v in untrusted) == 3
        assert untrusted[0].target.startswith("DNS answer from 127.0.0.1:53, a resolver this node does not trust")
        assert "naming ok.test: taught nothing" in untrusted[0].target and untrusted[0].action == "alert"
        [forged] = [v for v in rows if v.rule_id == "dns-forged"]
        assert forged.action == "deny" and forged.enforced and forged.dest_ip == "127.0.0.11"
        assert "sent as the trusted resolver 127.0.0.11:53 naming ok.test: dropped" in forged.target
        assert all(v.container and v.container.name == "dns-forger" for v in rows)
        assert agent.health()["dns"]["refused_untrusted"] == 3
    finally:
        await stop(runner)


@pytest.mark.django_db(transaction=True)
async def test_in_real_containers_a_forged_answer_teaches_nothing(runtime, enforcement, resolver):
    """Docker and Podman (busybox, the host's network, netprobe built static): one container
    resolves blocked.test (refused), then answers its own query from 127.0.0.1:53 naming the
    same address ok.test: still refused, and raised as a violation naming the container."""
    tag = uuid.uuid4().hex[:6]
    name = f"forger-{tag}"
    node, agent = await runtime_agent(runtime, enforcement, "rtdns", RULES)
    script = (f"/bin/netprobe resolve {DNS_SERVER} blocked.test {resolver.port}; "
              f"/bin/netprobe forge ok.test {BLOCKED} {resolver.port}")  # fmt: skip
    with cgroups_made(enforcement.enforcer.cgroup_root, [enforcement.parent]):
        runner = await run_agent(agent)
        try:
            done = await asyncio.to_thread(runtime.run, name, ["/bin/sh", "-c", script])
            assert done.stdout.decode().split("\n")[:2] == [f"{BLOCKED} {EPERM}", str(EPERM)], done.stderr.decode()

            def raised():
                return Violation.objects.filter(kind="dns", container__name=name).exists()

            await deliver_until(agent, node, raised, timeout=10)
        finally:
            await stop(runner)
    v = await Violation.objects.aget(kind="dns", container__name=name)
    assert (v.rule_id, v.action, v.dest_name) == ("dns-untrusted", "alert", "ok.test")


SERVE_IN_NETNS = """
import sys, time
from monitor.testbed import DnsServer
with DnsServer("127.0.0.11", port=5353) as server:
    server.set("blocked.test", "127.20.0.2")
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_dockers_embedded_resolver_behind_its_dnat_teaches_names(enforcement):
    """Docker's user-defined networks send 127.0.0.11:53 to a port of dockerd's own by a DNAT
    in the container's OUTPUT chain, which runs before the egress program sees the query:
    the answer (un-NATted, from :53) must still match it. A network namespace of the test's
    own with that rule, its DNS server on 127.0.0.11:5353; the deny by name holds (EPERM,
    not the ECONNREFUSED of an unnamed address: nothing listens there)."""
    app = enforcement.container("dns-dnat")
    netns = f"ce-dnat-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    server = None
    try:
        ns = ["ip", "netns", "exec", netns]
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run([*ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "127.0.0.11", "-p", "udp", "--dport", "53",
                        "-j", "DNAT", "--to-destination", "127.0.0.11:5353"], check=True)  # fmt: skip
        server = subprocess.Popen([*ns, sys.executable, "-c", SERVE_IN_NETNS], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert server.stdout.readline().strip() == "ready"
        enforcement.enforcer.start()
        enforcement.enforcer.sync(RuleSet.from_specs(RULES, 1))
        argv = [*ns, sys.executable, "-m", "monitor.testbed", "resolve", "127.0.0.11", "9", "blocked.test"]
        proc = app.spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30)
        assert out.decode().split() == [BLOCKED, str(EPERM)], err.decode()
        assert enforcement.enforcer.dns_stats()["unmatched"] == 0
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(10)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def carrying_resolver(address: str, blocked: str):
    """A resolver that answers the first of two queries on a TCP connection with a TXT
    record whose data is a complete answer to the second (as any resolver serves a domain's
    TXT records as their owner wrote them), and cuts its write so that a segment starts
    with that crafted answer. Returns (listening socket, thread)."""
    import threading

    import dns.rdataclass
    import dns.rdatatype
    import dns.rdtypes.ANY.TXT
    import dns.rrset

    server = socket.create_server((address, 53))

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream, messages = b"", []
            while len(messages) < 2:
                while len(stream) < 2 or len(stream) < 2 + struct.unpack("!H", stream[:2])[0]:
                    stream += conn.recv(4096)
                size = struct.unpack("!H", stream[:2])[0]
                messages.append(dns.message.from_wire(stream[2 : 2 + size]))
                stream = stream[2 + size :]
            carrier, target = messages
            forged = dns.message.make_response(target)
            forged.answer.append(dns.rrset.from_text(target.question[0].name, 3600, "IN", "A", blocked))
            crafted = struct.pack("!H", len(forged.to_wire())) + forged.to_wire()
            txt = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [crafted])
            response = dns.message.make_response(carrier)
            response.answer.append(dns.rrset.from_rdata(carrier.question[0].name, 60, txt))
            wire = response.to_wire()
            cut = wire.find(crafted)
            conn.sendall(struct.pack("!H", len(wire)) + wire[:cut])
            time.sleep(0.2)  # (its own segment)
            conn.sendall(wire[cut:])
            time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_an_answer_carried_inside_another_over_tcp_teaches_nothing(enforcement, resolver, named):
    """A trusted resolver serving a domain the attacker owns carries, in a TXT record's data,
    a crafted answer to the attacker's second pipelined query; the resolver's write is cut
    so that a TCP segment starts with it. Only the stream's message boundaries are answers."""
    carrier = "127.53.53.54"
    enforcement.enforcer.resolvers |= {carrier}
    enforcement.enforcer.start()  # (again: the trusted set is written at start)
    server, thread = carrying_resolver(carrier, BLOCKED)
    try:
        assert forge(named, "pipeline", carrier, "ok.test") == "received"
        thread.join(10)
    finally:
        server.close()
    assert connect_in(named, BLOCKED, resolver.port) == EPERM, "the carried answer was learned"
