"""Traffic on the real kernel: a 10 MiB transfer each way between a container and a server
on loopback is counted to the byte per flow by the packet programs (the payload TCP sent:
10 MiB, plus whatever it retransmitted, as its own counters say), every reading holds only
what came since the last one, and the agent stores it as per-minute rows that the billing
API sums to the same bytes."""

import asyncio
import fcntl
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.fleet.models import Node
from dashboard.traffic.models import TrafficMinute
from monitor.agent import Agent
from monitor.rules import RuleSet

from .conftest import deliver_until
from .test_enforce_agent import run_agent, stop

pytestmark = pytest.mark.kernel
SIZE = 10 * 1024 * 1024
SERVER = "127.22.0.1"
TCP_INFO_SENT = 200  # offset of tcpi_bytes_sent, then tcpi_bytes_retrans (u64 each)
CLIENT = r"""
import socket, struct, sys
size = int(sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x" * size)
s.shutdown(socket.SHUT_WR)
got = 0
while chunk := s.recv(1 << 16):
    got += len(chunk)
sent, again = struct.unpack_from("QQ", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232), 200)
print(s.getsockname()[1], got, sent, again)
"""


def tcp_sent(sock) -> tuple[int, int]:
    """Payload bytes TCP put on the wire (tcpi_bytes_sent), and of those, sent again."""
    return struct.unpack_from("QQ", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232), TCP_INFO_SENT)


def unacknowledged(sock) -> int:
    """Bytes in the send queue not yet acknowledged (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


class Echo:
    """A loopback server (outside every container) that takes SIZE bytes, then sends SIZE."""

    def __init__(self):
        self.sock = socket.create_server((SERVER, 0))
        self.port = self.sock.getsockname()[1]
        self.done = []  # (bytes received, bytes TCP sent, of those retransmitted) per connection
        self.errors = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    def echo(self, conn):
        try:
            with conn:
                got = 0
                while chunk := conn.recv(1 << 16):
                    got += len(chunk)
                conn.sendall(b"y" * SIZE)
                conn.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + 10
                while unacknowledged(conn) and time.monotonic() < deadline:  # until TCP's counters are final
                    time.sleep(0.005)
                self.done.append((got, *tcp_sent(conn)))
        except OSError as exc:
            self.errors.append(repr(exc))

    def close(self):
        self.sock.close()


@pytest.fixture
def echo():
    server = Echo()
    yield server
    server.close()


def transfer(container, echo) -> tuple[int, int, int]:
    """SIZE bytes out of the container and SIZE back: (the container's local port, payload
    TCP sent out of it and into it, retransmissions included)."""
    before = len(echo.done)
    proc = container.spawn([sys.executable, "-c", CLIENT, SERVER, str(echo.port), str(SIZE)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (err.decode(), echo.errors)
    port, got, sent, again = map(int, out.split())
    deadline = time.monotonic() + 5
    while len(echo.done) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    server_got, server_sent, server_again = echo.done[-1]
    assert (got, server_got) == (SIZE, SIZE)
    assert (sent, server_sent) == (SIZE + again, SIZE + server_again)  # TCP's own account
    return port, sent, server_sent


def test_a_transfer_is_counted_to_the_byte_both_ways_and_read_once(enforcement, echo):
    app = enforcement.container("traffic-app")
    other = enforcement.container("traffic-other")
    enforcement.enforcer.start()
    enforcement.enforcer.sync(RuleSet([], 1))
    port, sent, received = transfer(app, echo)
    rows = enforcement.enforcer.read_traffic()
    flows = {flow: counters for flow, counters in rows if flow[0] == app.cgroup_id}
    key = (app.cgroup_id, 4, 6, port, SERVER, echo.port)
    assert set(flows) == {key}, flows
    bytes_in, bytes_out, payload_in, payload_out, packets_in, packets_out = flows[key]
    assert (payload_in, payload_out) == (received, sent)  # 10 MiB each way, and any retransmission
    # every segment carries at least 40 bytes of IPv4 and TCP headers
    assert bytes_in >= payload_in + 40 * packets_in and bytes_out >= payload_out + 40 * packets_out
    assert packets_out >= SIZE // 65536 and packets_in >= SIZE // 65536
    assert not [r for r in enforcement.enforcer.read_traffic() if r[0][0] == app.cgroup_id], "read twice"
    # a second transfer, from another container: its own flow, counted as exactly
    port2, sent2, received2 = transfer(other, echo)
    rows = dict(enforcement.enforcer.read_traffic())
    assert rows[(other.cgroup_id, 4, 6, port2, SERVER, echo.port)][2:4] == (received2, sent2)
    assert not any(flow[0] == app.cgroup_id for flow in rows)
    assert enforcement.enforcer.traffic_lost() == 0


@pytest.mark.django_db(transaction=True)
async def test_the_agent_stores_the_minutes_and_the_api_sums_them(enforcement, echo, tmp_path, client, admin_user):
    node = await sync_to_async(Node.objects.create)(name="traffic-node", token_hash="t" * 64)
    app = enforcement.container("traffic-agent")
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, [])
    runner = await run_agent(agent)
    try:
        first = await asyncio.to_thread(transfer, app, echo)
        second = await asyncio.to_thread(transfer, app, echo)
    finally:
        await stop(runner)  # the last drain goes out as the agent stops, minute over or not

    def stored():
        return TrafficMinute.objects.filter(container__name="traffic-agent", remote_port=echo.port).count() >= 2

    await deliver_until(agent, node, stored)
    rows = [r async for r in TrafficMinute.objects.filter(container__name="traffic-agent", remote_port=echo.port)]
    assert {r.local_port for r in rows} == {first[0], second[0]}
    assert all(r.proto == "tcp" and r.remote_ip == SERVER for r in rows)
    sent, received = first[1] + second[1], first[2] + second[2]
    assert (sum(r.payload_out for r in rows), sum(r.payload_in for r in rows)) == (sent, received)
    await sync_to_async(client.force_login)(admin_user)
    body = (await sync_to_async(client.get)("/api/traffic/", {"container": "traffic-agent"})).json()
    (total,) = body["results"]
    assert (total["container"], total["payload_out"], total["payload_in"]) == ("traffic-agent", sent, received)
