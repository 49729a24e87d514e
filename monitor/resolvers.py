"""The DNS resolvers a node trusts: only their answers to a container's own queries teach
the kernel which name an address has (bpfscripts/dns.bpf.h).

By default: the nameservers of the host's resolv.conf (what a container on the host's
network, or on Docker's default bridge, is given), and where those are only loopback (a
local stub such as systemd-resolved's 127.0.0.53, which a bridged container cannot reach)
the stub's upstream servers as Docker gives them to such containers
(/run/systemd/resolve/resolv.conf); Docker's embedded resolver 127.0.0.11 (user-defined
networks); plus those the node is configured with (`runagent --dns-resolver`). A
container's own /etc/resolv.conf is not read: the container can write it, and a resolver
it picks could name any address as it likes.
"""

from __future__ import annotations

import ipaddress

import dns.resolver

HOST_RESOLV_CONF = "/etc/resolv.conf"
STUB_UPSTREAM = "/run/systemd/resolve/resolv.conf"  # Docker's choice when the host's are loopback
DOCKER_EMBEDDED = "127.0.0.11"


def nameservers(path: str) -> set[str]:
    """The nameserver addresses of a resolv.conf (dnspython reads it), none if it has none."""
    resolver = dns.resolver.Resolver(configure=False)
    try:
        resolver.read_resolv_conf(path)
    except (OSError, dns.resolver.NoResolverConfiguration):
        return set()
    return {str(ipaddress.ip_address(ns)) for ns in resolver.nameservers if _is_address(ns)}


def parse(configured) -> tuple[str, ...]:
    """Resolver addresses given by an operator (ValueError naming the first that is none)."""
    out = []
    for text in configured:
        try:
            out.append(str(ipaddress.ip_address(str(text).strip())))
        except ValueError:
            raise ValueError(f"{text!r} is not a resolver's IP address (e.g. 127.0.0.53 or fd00::53)") from None
    return tuple(out)


def trusted(configured=(), host_resolv_conf: str = HOST_RESOLV_CONF, upstream: str = STUB_UPSTREAM) -> frozenset[str]:
    """The node's trusted resolvers: the host's (and its stub's upstream servers), Docker's
    embedded one and the configured."""
    host = nameservers(host_resolv_conf)
    if all(ipaddress.ip_address(a).is_loopback for a in host):
        host |= nameservers(upstream)
    return frozenset(host | {DOCKER_EMBEDDED} | set(parse(configured)))


def _is_address(text) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
