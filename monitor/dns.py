"""Names: what the containers resolved, and the name patterns rules match on.

The kernel (bpfscripts/dns.bpf.h) parses each DNS answer a monitored container receives
and remembers its addresses by (cgroup, address) with the name's hash and the TTL; it
sends the answer on, and the agent reads its question here with dnspython, so that the
events can show the name behind a hash. The hash is computed the same way on both sides
(`name_hash`), and the kernel's choice of a name's pattern (`best_pattern`) is mirrored
here for the entries the agent rewrites when the rules change.

Patterns: "api.example.com" (that name), "*.example.com" (every name below
example.com, at any depth, not example.com itself) and "none" (an address the container
never resolved, or whose TTL has run out; DNS servers, port 53, are not "none").
Names compare in lower case, without the root's trailing dot.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import dns.exception
import dns.name

from .kernel.layout import fnv1a

NONE = "none"
DNS_PORT = 53
MAX_NAME = 253
HEADER = 12  # bytes before a DNS message's question
LABEL_RE = re.compile(rb"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
MAX_REMEMBERED = 65536  # names by hash (the kernel's table of learned addresses holds as many)


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


def question_name(message: bytes) -> str:
    """The name a DNS response answers (its question), lower case, no trailing dot;
    ValueError if the message has no readable question."""
    if len(message) < HEADER or int.from_bytes(message[4:6], "big") != 1:
        raise ValueError("not a DNS message with one question")
    try:
        name, _used = dns.name.from_wire(message, HEADER)
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a DNS message: {exc}") from None
    return b".".join(label.lower() for label in name.labels if label).decode("ascii", "replace")


class Names:
    """The names behind the kernel's name hashes (bounded: least recently learned go
    first). The addresses each container learned, with their TTLs, are the kernel's
    `resolved` table. An answer's question is kept as it came and read (dnspython) only
    when a call to one of its addresses needs the name: a storm of answers costs the agent
    a dictionary write each, whatever the names."""

    def __init__(self, cap: int = MAX_REMEMBERED):
        self.cap = cap
        self.by_hash: collections.OrderedDict[int, str | bytes] = collections.OrderedDict()
        self.counts = collections.Counter()  # answers, names, unreadable, calls_unnamed

    def heard(self, name_hash: int, message: bytes) -> None:
        """One answer the kernel passed on (ValueError if it holds no single question)."""
        self.counts["answers"] += 1
        if name_hash in self.by_hash:
            self.by_hash.move_to_end(name_hash)
            return
        if len(message) <= HEADER or int.from_bytes(message[4:6], "big") != 1:
            raise ValueError("not a DNS message with one question")
        self.by_hash[name_hash] = bytes(message)
        self.counts["names"] += 1
        if len(self.by_hash) > self.cap:
            self.by_hash.popitem(last=False)

    def name(self, name_hash: int) -> str | None:
        known = self.by_hash.get(name_hash)
        if isinstance(known, bytes):
            try:
                known = self.by_hash[name_hash] = question_name(known)
            except ValueError:
                self.counts["unreadable"] += 1
                del self.by_hash[name_hash]
                return None
        return known


UNSOLICITED, UNTRUSTED, FORGED = "unsolicited", "untrusted", "forged"
REPORT_EVERY = 10.0  # seconds: after a container's first report of a kind, the rest are summed this long


def refused_reason(record: dict) -> str | None:
    """Why the kernel learned nothing from a DNS record (None: it was learned from)."""
    if record.get("forged"):
        return FORGED
    if record.get("unmatched"):
        return UNTRUSTED if record.get("untrusted") else UNSOLICITED
    return None


class RefusedAnswers:
    """DNS answers the kernel learned nothing from, and responses it dropped as forged, as
    reports: a container's first of each reason at once, then one per REPORT_EVERY with the
    count since (a flood of forged answers is one row every ten seconds, not one a packet)."""

    def __init__(self, every: float = REPORT_EVERY):
        self.every = every
        self.waiting: dict[tuple[int, str], dict] = {}  # summed, not reported yet
        self.reported: dict[tuple[int, str], float] = {}  # last report (monotonic)

    def add(self, record: dict, reason: str, now: float) -> dict | None:
        """Count one; the report due now, if it is."""
        key = (record["cgroup_id"], reason)
        last = self.waiting.get(key)
        if last is None:
            last = self.waiting[key] = {"cgroup_id": key[0], "reason": reason, "count": 0, "since": now}
        last.update(count=last["count"] + 1, peer=record["peer"], message=record["message"])
        return self._due(key, now)

    def due(self, now: float, force: bool = False) -> list[dict]:
        """The reports whose quiet time is over (force: all of them: the agent stops)."""
        out = [self._due(key, now, force) for key in list(self.waiting)]
        for key, at in list(self.reported.items()):
            if now - at >= self.every and key not in self.waiting:
                del self.reported[key]  # quiet for a while: the next one goes out at once
        return [r for r in out if r]

    def _due(self, key: tuple[int, str], now: float, force: bool = False) -> dict | None:
        if not force and now - self.reported.get(key, float("-inf")) < self.every:
            return None
        report = self.waiting.pop(key)
        self.reported[key] = now
        report["window_s"] = round(now - report.pop("since"))
        try:
            report["name"] = question_name(report.pop("message"))
        except ValueError:
            report["name"] = ""
        return report
