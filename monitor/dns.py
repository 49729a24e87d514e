"""Names: what the containers resolved, and the name patterns rules match on.

The kernel (bpfscripts/dns.bpf.h) parses each DNS answer a monitored container receives
and remembers its addresses by (cgroup, address) with the name's hash; it sends the
answer on, and the agent parses it again here with dnspython, so that the events can
show the name behind a hash. The hash is computed the same way on both sides
(`name_hash`), and the kernel's choice of a name's pattern (`best_pattern`) is mirrored
here for the entries the agent rewrites when the rules change.

Patterns: "api.example.com" (that name), "*.example.com" (every name below
example.com, at any depth, not example.com itself) and "none" (an address the container
never resolved, or whose TTL has run out; DNS servers, port 53, are not "none").
Names compare in lower case, without the root's trailing dot.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from .kernel.layout import fnv1a

NONE = "none"
DNS_PORT = 53
MAX_NAME = 253
LABEL_RE = re.compile(rb"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
MAX_REMEMBERED = 65536  # names by hash, and learned addresses (the kernel's table holds as many)


def labels(name: str) -> list[bytes]:
    """The labels of a name in lower case (ValueError if it is no valid host name)."""
    if not isinstance(name, str):
        raise ValueError("must be a DNS name such as api.example.com")
    text = name.strip().lower().removesuffix(".")
    if not text or len(text) > MAX_NAME:
        raise ValueError(f"{name!r} is not a DNS name (1-{MAX_NAME} characters)")
    try:
        parts = [p.encode("ascii") for p in text.split(".")]
    except UnicodeEncodeError:
        raise ValueError(f"{name!r}: write internationalised names in their xn-- form") from None
    for part in parts:
        if not LABEL_RE.match(part):
            raise ValueError(f"{name!r}: label {part.decode()!r} is not a valid DNS label")
    return parts


def wire(parts: list[bytes]) -> bytes:
    """A name's wire form without the root label: b"\\3api\\7example\\3com"."""
    return b"".join(bytes([len(p)]) + p for p in parts)


def name_hash(parts: list[bytes]) -> int:
    """FNV-1a 64 over the wire form from its last byte to its first, as the kernel hashes:
    one backwards pass there gives every suffix's hash at its label start."""
    return fnv1a(wire(parts)[::-1])


@dataclass(frozen=True)
class Pattern:
    """A rule's `dest_fqdn`: kind "exact", "wild" or "none", and the name (or suffix)."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if isinstance(text, str) and text.strip().lower() == NONE:
            return cls(NONE)
        if isinstance(text, str) and text.strip().startswith("*."):
            return cls("wild", b".".join(labels(text.strip()[2:])).decode())
        if isinstance(text, str) and set("*?[") & set(text):
            raise ValueError(f"{text!r}: a wildcard may only open a name, as in *.example.com")
        return cls("exact", b".".join(labels(text)).decode())

    def __str__(self) -> str:
        return {"exact": self.name, "wild": f"*.{self.name}", NONE: NONE}[self.kind]

    @property
    def hash(self) -> int:
        return 0 if self.kind == NONE else name_hash(labels(self.name))

    def matches(self, name: str | None) -> bool:
        """`name`: what the container resolved the destination from; "" if nothing, None
        if that is not known (no name rule matches then)."""
        if self.kind == NONE:
            return name == ""
        if not name:
            return False
        if self.kind == "exact":
            return name == self.name
        return name.endswith("." + self.name)

    def covers(self, other: Pattern) -> bool:
        """Every name `other` matches is matched by this one too."""
        if self.kind == NONE or other.kind == NONE:
            return self == other
        if self.kind == "exact" or other == self:
            return other == self
        return other.name.endswith("." + self.name)


def best_pattern(name: str, patterns) -> Pattern | None:
    """The most specific of `patterns` matching name: the name itself, else the longest
    wildcard suffix (the kernel's choice, mirrored)."""
    exact = Pattern("exact", name)
    if exact in patterns:
        return exact
    parts = name.split(".")
    for i in range(1, len(parts)):
        wild = Pattern("wild", ".".join(parts[i:]))
        if wild in patterns:
            return wild
    return None


@dataclass(frozen=True)
class Answer:
    """A DNS response as the agent reads it."""

    name: str  # the question, lower case, no trailing dot
    addresses: tuple[tuple[str, int], ...]  # (address, ttl) of every A/AAAA record read
    rcode: str
    complete: bool  # False: the kernel read only the first part, or it did not parse whole


def parse_answer(message: bytes) -> Answer:
    """ValueError if the message has no readable question."""
    try:
        msg = dns.message.from_wire(message, ignore_trailing=True)
        complete = True
    except dns.exception.DNSException:
        try:  # cut short by the kernel's read: the question still names it
            msg = dns.message.from_wire(message, question_only=True)
        except dns.exception.DNSException as exc:
            raise ValueError(f"not a DNS message: {exc}") from None
        complete = False
    if len(msg.question) != 1:
        raise ValueError(f"a response with {len(msg.question)} questions")
    qname = msg.question[0].name
    name = b".".join(label.lower() for label in qname.labels if label).decode("ascii", "replace")
    found = []
    for rrset in msg.answer if complete else ():
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found += [(rd.address, rrset.ttl) for rd in rrset]
    return Answer(name, tuple(found), dns.rcode.to_text(msg.rcode()), complete)


class Names:
    """What the containers of this node resolved: hash -> name, and (cgroup, address) ->
    (name, expiry), both bounded (least recently learned go first)."""

    def __init__(self, cap: int = MAX_REMEMBERED):
        self.cap = cap
        self.by_hash: collections.OrderedDict[int, str] = collections.OrderedDict()
        self.learned: collections.OrderedDict[tuple[int, str], tuple[str, int]] = collections.OrderedDict()
        self.counts = collections.Counter()  # answers, addresses, unreadable, cut

    def learn(self, cgroup_id: int, name_hash: int, answer: Answer, mono_ns: int) -> None:
        self._put(self.by_hash, name_hash, answer.name)
        for address, ttl in answer.addresses:
            expires = mono_ns + max(ttl, 1) * 10**9  # the kernel's CE_DNS_MIN_TTL_NS
            self._put(self.learned, (cgroup_id, str(ipaddress.ip_address(address))), (answer.name, expires))
        self.counts["answers"] += 1
        self.counts["addresses"] += len(answer.addresses)

    def _put(self, table: collections.OrderedDict, key, value) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.cap:
            table.popitem(last=False)

    def name(self, name_hash: int) -> str | None:
        return self.by_hash.get(name_hash)

    def live(self, now_ns: int) -> list[tuple[int, str, str, int]]:
        """(cgroup, address, name, expiry) of every learned address not yet expired."""
        return [(cg, addr, name, exp) for (cg, addr), (name, exp) in self.learned.items() if exp > now_ns]
