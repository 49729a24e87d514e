"""The rule engine: plain data in, verdict out.

No Django here: the agent evaluates with it, and the dashboard validates admin forms and
YAML imports with the same `parse_rule`, so a rule the dashboard accepts is exactly a rule
the agent can run.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import ipaddress
import re
from dataclasses import dataclass, field

from .dns import DNS_PORT, Pattern

ACTIONS = ("allow", "alert", "deny")
MODES = ("enforce", "audit")  # audit: a deny is reported (and counted by the kernel) but let through
SEVERITIES = ("info", "low", "medium", "high", "critical")
RULE_KEYS = ("id", "description", "priority", "severity", "tags", "match", "action", "mode", "expires", "limit",
             "hold")  # fmt: skip
MATCH_KEYS = ("cgroup_id", "cgroup_path", "container", "dest_ip", "dest_fqdn", "dest_port", "binary", "parent", "path",
              "access", "source_ip", "fileless", "sha256", "socket", "unix_path")  # fmt: skip
SOURCE_KEYS = ("source_ip",)  # a rule with it judges packets arriving at the node's XDP interfaces
CONNECT_KEYS = ("dest_ip", "dest_fqdn", "dest_port")
EXEC_KEYS = ("binary", "parent", "fileless", "sha256")  # a rule with one of these judges execs, not connections
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_HASHES = 1000  # content hashes one rule names
FILE_KEYS = ("path", "access")  # ... with a path, opens (binary and parent then name the opener)
ACCESSES = ("read", "write", "create", "truncate")  # what an open asks for
SCOPE_KEYS = ("cgroup_id", "cgroup_path", "container")
# sockets a container sends with past the connect() and sendto() judges: raw IP, AF_PACKET, ICMP "ping" and SCTP
SOCKETS = ("raw", "packet", "icmp", "sctp")
MAX_UNIX_PATH = 107  # sun_path's bytes, less its NUL
# what a limit rule counts, per second: a container's new destinations (a scan), a source's TCP SYNs at XDP (a
# flood), a container's bytes sent and connect() calls (limits it is held to)
LIMITS = ("new_destinations", "syn_per_source", "egress_bytes_per_s", "connections_per_s")
RATE_LIMITS = ("egress_bytes_per_s", "connections_per_s")
MAX_RATE = 10**12
MAX_LIMIT = 1_000_000
DEFAULT_HOLD = 60  # seconds a deny limit rule refuses the container's calls
MAX_HOLD = 86_400
GLOB_CHARS = frozenset("*?[")
DEFAULT_PRIORITY = 100
DEFAULT_SEVERITY = "medium"
DEFAULT_MODE = "enforce"
RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_TEXT = 500
MAX_TAGS = 32


class RuleError(ValueError):
    """A rule that does not fit the schema; names the rule and the field at fault."""

    def __init__(self, rule_id: str | None, field_name: str, message: str):
        self.rule_id = rule_id
        self.field = field_name
        self.message = message
        who = f"rule {rule_id!r}" if rule_id else "rule"
        super().__init__(f"{who}: {field_name}: {message}")


def parse_port(value) -> tuple[int, int]:
    """A port (443) or an inclusive range ("8000-8080") as (low, high)."""
    if isinstance(value, bool):
        raise ValueError("must be a port number or a range like 8000-8080")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,5}\s*(-\s*\d{1,5}\s*)?", value):
        parts = [int(p) for p in value.split("-")]
        low, high = parts[0], parts[-1]
    else:
        raise ValueError("must be a port number or a range like 8000-8080")
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValueError("ports must be between 1 and 65535")
    if low > high:
        raise ValueError(f"range {low}-{high} runs backwards")
    return low, high


def format_port(low: int, high: int) -> int | str:
    return low if low == high else f"{low}-{high}"


def parse_network(value) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("must be an IP address or CIDR such as 127.10.10.5/32 or fd00::/8")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR ({exc})") from None


@functools.lru_cache(maxsize=65536)
def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """ipaddress.ip_address, remembered: every event parses one and they repeat (ValueError if bad)."""
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=65536)
def glob_match(value: str, pattern: str) -> bool:
    """fnmatch, remembered: the same containers and paths come back on every event."""
    return fnmatch.fnmatchcase(value, pattern)


def _text(rule_id, name, value, *, required=False, limit=MAX_TEXT) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise RuleError(rule_id, name, "must be a non-empty string" if required else "must be a string")
    if len(value) > limit:
        raise RuleError(rule_id, name, f"longer than {limit} characters")
    return value


@dataclass(frozen=True)
class Rule:
    """One validated rule. Unset selectors match anything."""

    id: str
    action: str
    description: str = ""
    priority: int = DEFAULT_PRIORITY
    severity: str = DEFAULT_SEVERITY
    tags: tuple[str, ...] = ()
    cgroup_id: int | None = None
    cgroup_path: str | None = None
    container: str | None = None
    dest_net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port_range: tuple[int, int] | None = None
    dest_fqdn: Pattern | None = None  # the name the container resolved the destination from
    binary: str | None = None  # glob on the exec'd path
    parent: str | None = None  # glob on the parent's binary
    fileless: bool = False  # exec: only a file with no name left (memfd_create, a deleted file)
    sha256: tuple[str, ...] | None = None  # exec: the file's content is one of these (SHA-256, hex)
    path: str | None = None  # glob on an opened file's path
    access: tuple[str, ...] | None = None  # the accesses an open rule applies to (None: any)
    source_net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ingress: packets from here
    expires: dt.datetime | None = None  # after this the rule no longer applies (ingress rules)
    limit: tuple[str, int] | None = None  # (what, per second): a limit rule's threshold or rate (LIMITS)
    hold: int | None = None  # seconds a deny limit rule refuses the container's calls
    socket: tuple[str, ...] | None = None  # a socket rule: the kinds of socket it judges at creation (SOCKETS)
    unix_path: str | None = None  # a unix socket rule: the path connected to ("@name": an abstract one)
    mode: str = DEFAULT_MODE
    order: int = field(default=0, compare=False)

    @property
    def scoped(self) -> bool:
        """True when the rule selects some containers rather than every one."""
        return self.cgroup_id is not None or self.cgroup_path is not None or self.container is not None

    @property
    def audit(self) -> bool:
        return self.mode == "audit"

    @property
    def kind(self) -> str:
        """What the rule judges: "ingress" (a source network, at XDP), "scan" (a container's
        new destinations per second), "flood" (a source's SYNs per second, at XDP), "limit" (a
        container's egress or connection rate), "socket" (a raw, packet, ICMP or SCTP socket
        made), "unix" (a unix socket connected to by path), "open" (it names a path), "exec"
        (a binary or parent) or "connect"."""
        if self.limit is not None:
            return {"new_destinations": "scan", "syn_per_source": "flood"}.get(self.limit[0], "limit")
        if self.source_net is not None:
            return "ingress"
        if self.socket is not None:
            return "socket"
        if self.unix_path is not None:
            return "unix"
        if self.path is not None:
            return "open"
        if self.binary is not None or self.parent is not None or self.fileless or self.sha256 is not None:
            return "exec"
        return "connect"

    def matches_scope(self, cgroup_id: int | None, cgroup_path: str | None, container: str | None) -> bool:
        if self.cgroup_id is not None and cgroup_id != self.cgroup_id:
            return False
        if self.container is not None and not (container and glob_match(container, self.container)):
            return False
        if self.cgroup_path is not None and not (cgroup_path and glob_match(cgroup_path, self.cgroup_path)):
            return False
        return True

    def matches_exec(self, proc: Exec) -> bool:
        if self.kind != "exec" or not self.matches_scope(proc.cgroup_id, proc.cgroup_path, proc.container):
            return False
        if self.binary is not None and not glob_match(proc.binary, self.binary):
            return False
        if self.fileless and not proc.fileless:
            return False
        if self.sha256 is not None and proc.sha256 not in self.sha256:
            return False
        if self.parent is not None and not (
            proc.parents and proc.parents[0] and glob_match(proc.parents[0], self.parent)
        ):
            return False
        return True

    def matches_open(self, op: Open) -> bool:
        if self.kind != "open" or not self.matches_scope(op.cgroup_id, op.cgroup_path, op.container):
            return False
        if not glob_match(op.path, self.path):
            return False
        if self.access is not None and not set(self.access) & set(op.access):
            return False
        if self.binary is not None and not glob_match(op.binary, self.binary):
            return False
        if self.parent is not None and not (op.parents and op.parents[0] and glob_match(op.parents[0], self.parent)):
            return False
        return True

    def matches_socket(self, kind: str, cgroup_id: int | None, cgroup_path: str | None, container: str | None,
                       path: str = "") -> bool:  # fmt: skip
        """A socket made (kind in SOCKETS), or a unix socket connected to (kind "unix", its path)."""
        if kind == "unix":
            return (
                self.kind == "unix"
                and path in unix_spellings(self.unix_path)
                and self.matches_scope(cgroup_id, cgroup_path, container)
            )
        return self.kind == "socket" and kind in self.socket and self.matches_scope(cgroup_id, cgroup_path, container)

    def matches(self, flow: Flow) -> bool:
        if self.kind != "connect":
            return False
        if not self.matches_scope(flow.cgroup_id, flow.cgroup_path, flow.container):
            return False
        if self.dest_net is not None and (
            flow.dest_ip is None or flow.dest_ip.version != self.dest_net.version or flow.dest_ip not in self.dest_net
        ):
            return False
        if self.port_range is not None and not (self.port_range[0] <= flow.dest_port <= self.port_range[1]):
            return False
        if self.dest_fqdn is not None:
            if self.dest_fqdn.kind == "none" and flow.dest_port == DNS_PORT:
                return False  # asking a DNS server is how names are learned, not a sign of anything
            return self.dest_fqdn.matches(flow.dest_name)
        return True

    def to_spec(self) -> dict:
        """The rule in the policy file's (seed) format."""
        match = {}
        if self.cgroup_id is not None:
            match["cgroup_id"] = self.cgroup_id
        if self.cgroup_path is not None:
            match["cgroup_path"] = self.cgroup_path
        if self.container is not None:
            match["container"] = self.container
        if self.dest_net is not None:
            match["dest_ip"] = str(self.dest_net)
        if self.dest_fqdn is not None:
            match["dest_fqdn"] = str(self.dest_fqdn)
        if self.port_range is not None:
            match["dest_port"] = format_port(*self.port_range)
        if self.binary is not None:
            match["binary"] = self.binary
        if self.parent is not None:
            match["parent"] = self.parent
        if self.fileless:
            match["fileless"] = True
        if self.sha256 is not None:
            match["sha256"] = list(self.sha256)
        if self.path is not None:
            match["path"] = self.path
        if self.access is not None:
            match["access"] = list(self.access)
        if self.source_net is not None:
            match["source_ip"] = str(self.source_net)
        if self.socket is not None:
            match["socket"] = self.socket[0] if len(self.socket) == 1 else list(self.socket)
        if self.unix_path is not None:
            match["unix_path"] = self.unix_path
        spec = {"id": self.id, "description": self.description, "match": match, "action": self.action}
        if self.expires is not None:
            spec["expires"] = self.expires.isoformat().replace("+00:00", "Z")
        if self.limit is not None:
            spec["limit"] = {self.limit[0]: self.limit[1]}
        if self.hold is not None:
            spec["hold"] = self.hold
        if self.priority != DEFAULT_PRIORITY:
            spec["priority"] = self.priority
        if self.severity != DEFAULT_SEVERITY:
            spec["severity"] = self.severity
        if self.tags:
            spec["tags"] = list(self.tags)
        if self.mode != DEFAULT_MODE:
            spec["mode"] = self.mode
        return spec


def parse_rule(data, *, order: int = 0, where: str | None = None) -> Rule:
    """Validate one rule in the seed format against the strict schema."""
    if not isinstance(data, dict):
        raise RuleError(where, "rule", "must be a mapping with id, match and action")
    rule_id = data.get("id")
    if not isinstance(rule_id, str) or not RULE_ID_RE.match(rule_id):
        raise RuleError(where, "id", "must be 1-64 letters, digits, '.', '_', ':' or '-' (e.g. rule-001)")
    unknown = sorted(set(data) - set(RULE_KEYS))
    if unknown:
        raise RuleError(rule_id, unknown[0], f"unknown field (allowed: {', '.join(RULE_KEYS)})")

    action = data.get("action")
    if action not in ACTIONS:
        raise RuleError(rule_id, "action", f"must be one of {', '.join(ACTIONS)}, not {action!r}")
    mode = data.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        raise RuleError(rule_id, "mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "audit" and action != "deny":
        raise RuleError(rule_id, "mode", "audit applies to deny rules only (it reports a deny without enforcing it)")
    severity = data.get("severity", DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        raise RuleError(rule_id, "severity", f"must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    priority = data.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1_000_000:
        raise RuleError(rule_id, "priority", "must be a whole number from 0 to 1000000 (lower runs first)")
    description = _text(rule_id, "description", data.get("description"))
    tags = data.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise RuleError(rule_id, "tags", f"must be a list of at most {MAX_TAGS} strings")
    for tag in tags:
        _text(rule_id, "tags", tag, required=True, limit=64)

    match = data.get("match")
    if not isinstance(match, dict):
        raise RuleError(rule_id, "match", "must be a mapping (use {} to match every connection)")
    unknown = sorted(set(match) - set(MATCH_KEYS))
    if unknown:
        raise RuleError(rule_id, f"match.{unknown[0]}", f"unknown selector (allowed: {', '.join(MATCH_KEYS)})")

    cgroup_id = match.get("cgroup_id")
    if cgroup_id is not None and (isinstance(cgroup_id, bool) or not isinstance(cgroup_id, int) or cgroup_id <= 0):
        raise RuleError(rule_id, "match.cgroup_id", "must be a positive whole number (the cgroup2 inode)")
    for key in ("cgroup_path", "container"):
        if key in match:
            _text(rule_id, f"match.{key}", match[key], required=True, limit=4096)
    for key in ("binary", "parent"):
        if key in match:
            _text(rule_id, f"match.{key}", match[key], required=True, limit=1024)
    if "fileless" in match and match["fileless"] is not True:
        raise RuleError(rule_id, "match.fileless", "must be true (an exec of a file with no name: memfd_create, a "
                        "deleted file); leave it out otherwise")  # fmt: skip
    sha256 = match.get("sha256")
    if sha256 is not None:
        sha256 = [sha256] if isinstance(sha256, str) else sha256
        if (
            not isinstance(sha256, list)
            or not sha256
            or len(sha256) > MAX_HASHES
            or not all(isinstance(h, str) and SHA256_RE.match(h.lower()) for h in sha256)
        ):
            raise RuleError(rule_id, "match.sha256", f"must be a SHA-256 (64 hex digits) or a list of at most "
                            f"{MAX_HASHES} of them: the content of the file that runs")  # fmt: skip
        sha256 = tuple(dict.fromkeys(h.lower() for h in sha256))
        if "path" in match:
            raise RuleError(rule_id, "match.sha256", "applies to exec rules (the file that runs), not to opens")
    if "fileless" in match and "path" in match:
        raise RuleError(rule_id, "match.fileless", "applies to exec rules (with binary or parent), not to opens")
    if "path" in match:
        _text(rule_id, "match.path", match["path"], required=True, limit=1024)
    access = match.get("access")
    if access is not None:
        if "path" not in match:
            raise RuleError(rule_id, "match.access", "applies to file rules only: add a path")
        if isinstance(access, str):
            access = [access]
        if not isinstance(access, list) or not access or any(a not in ACCESSES for a in access):
            raise RuleError(rule_id, "match.access", f"must be a list of {', '.join(ACCESSES)} (e.g. [write, create])")
        access = tuple(a for a in ACCESSES if a in access)
    judged = [kind for kind, keys in (("connections", CONNECT_KEYS), ("execs", EXEC_KEYS), ("opens", FILE_KEYS))
              if any(k in match for k in keys)]  # fmt: skip
    if "connections" in judged and len(judged) > 1:
        raise RuleError(rule_id, "match", f"a rule judges one kind of event, not {' and '.join(judged)} "
                        "(dest_ip, dest_port: connections; binary, parent: execs; path, access: opens, "
                        "by that binary and parent): make two rules")  # fmt: skip
    source_net = None
    if "source_ip" in match:
        if set(match) - {"source_ip"}:
            raise RuleError(rule_id, "match.source_ip", "an ingress rule names only the source (it is judged at the "
                            "node's interfaces, before any container): make it a rule of its own")  # fmt: skip
        try:
            source_net = parse_network(match["source_ip"])
        except ValueError as exc:
            raise RuleError(rule_id, "match.source_ip", str(exc)) from None
    expires = data.get("expires")
    if expires is not None:
        if source_net is None:
            raise RuleError(rule_id, "expires", "applies to ingress rules (match.source_ip) only")
        expires = parse_expiry(rule_id, expires)
    limit, hold = _limit(rule_id, data, match, action)
    socket_kinds = _socket(rule_id, match)
    unix_path = _unix_path(rule_id, match)
    try:
        dest_net = parse_network(match["dest_ip"]) if "dest_ip" in match else None
    except ValueError as exc:
        raise RuleError(rule_id, "match.dest_ip", str(exc)) from None
    dest_fqdn = None
    if "dest_fqdn" in match:
        if "dest_ip" in match:
            raise RuleError(rule_id, "match.dest_fqdn", "a rule names its destination by address or by name, not both")
        try:
            dest_fqdn = Pattern.parse(match["dest_fqdn"])
        except ValueError as exc:
            example = "(e.g. api.example.com, *.example.com or none)"
            raise RuleError(rule_id, "match.dest_fqdn", f"{exc} {example}") from None
        if port_range_spec := match.get("dest_port"):
            if isinstance(port_range_spec, str) and "-" in port_range_spec:
                raise RuleError(rule_id, "match.dest_port", "a rule by name takes one port (or none for any)")
    try:
        port_range = parse_port(match["dest_port"]) if "dest_port" in match else None
    except ValueError as exc:
        raise RuleError(rule_id, "match.dest_port", str(exc)) from None

    return Rule(
        id=rule_id,
        action=action,
        description=description,
        priority=priority,
        severity=severity,
        tags=tuple(tags),
        cgroup_id=cgroup_id,
        cgroup_path=match.get("cgroup_path"),
        container=match.get("container"),
        dest_net=dest_net,
        port_range=port_range,
        dest_fqdn=dest_fqdn,
        binary=match.get("binary"),
        parent=match.get("parent"),
        fileless=bool(match.get("fileless")),
        sha256=sha256,
        path=match.get("path"),
        access=access,
        source_net=source_net,
        expires=expires,
        limit=limit,
        hold=hold,
        socket=socket_kinds,
        unix_path=unix_path,
        mode=mode,
        order=order,
    )


def _unix_path(rule_id: str, match: dict) -> str | None:
    """A unix socket rule's path, checked: absolute (or "@name"), alone with containers."""
    if "unix_path" not in match:
        return None
    path = _text(rule_id, "match.unix_path", match["unix_path"], required=True, limit=MAX_UNIX_PATH)
    if not path.startswith(("/", "@")) or path == "@" or "\0" in path or GLOB_CHARS & set(path):
        raise RuleError(rule_id, "match.unix_path", "must be a socket's absolute path (/var/run/docker.sock) or an "
                        "abstract name (@name), without wildcards")  # fmt: skip
    if set(match) - {"unix_path", *SCOPE_KEYS}:
        raise RuleError(rule_id, "match.unix_path", "a unix socket rule names only the path and containers "
                        "(container, cgroup_path, cgroup_id)")  # fmt: skip
    return path


def unix_spellings(path: str) -> tuple[str, ...]:
    """The names a unix socket rule's path is matched as: itself and, for a path below /run
    or /var/run (one directory on every current distribution), the other."""
    for one, other in (("/var/run/", "/run/"), ("/run/", "/var/run/")):
        if path.startswith(one):
            return path, other + path[len(one) :]
    return (path,)


def _socket(rule_id: str, match: dict) -> tuple[str, ...] | None:
    """A socket rule's kinds, checked: it names only them and containers."""
    if "socket" not in match:
        return None
    kinds = match["socket"]
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not kinds or any(k not in SOCKETS for k in kinds):
        raise RuleError(rule_id, "match.socket", f"must be one of {', '.join(SOCKETS)} or a list of them (raw: raw IP; "
                        "packet: AF_PACKET; icmp: ping sockets; sctp)")  # fmt: skip
    if set(match) - {"socket", *SCOPE_KEYS}:
        raise RuleError(rule_id, "match.socket", "a socket rule names only the kind of socket and containers "
                        "(container, cgroup_path, cgroup_id): it is judged when the socket is made")  # fmt: skip
    return tuple(k for k in SOCKETS if k in kinds)


def _limit(rule_id: str, data: dict, match: dict, action: str) -> tuple[tuple[str, int] | None, int | None]:
    """A limit rule's (what, per second) and hold, checked: it names containers only."""
    limit, hold = data.get("limit"), data.get("hold")
    if limit is None:
        if hold is not None:
            raise RuleError(rule_id, "hold", "applies to limit rules (limit: {new_destinations: N} or "
                            "{syn_per_source: N}) only")  # fmt: skip
        return None, None
    example = ("e.g. {new_destinations: 100}: a container reaching 100 new destinations within a second; "
               "{syn_per_source: 1000}: a source sending 1,000 TCP SYNs within a second; {egress_bytes_per_s: "
               "1000000} or {connections_per_s: 50}: what a container is held to")  # fmt: skip
    if not isinstance(limit, dict) or len(limit) != 1:
        raise RuleError(rule_id, "limit", f"must be a mapping with one of {', '.join(LIMITS)} ({example})")
    ((what, per_second),) = limit.items()
    if what not in LIMITS:
        raise RuleError(rule_id, "limit", f"unknown limit {what!r} (allowed: {', '.join(LIMITS)})")
    top = MAX_RATE if what in RATE_LIMITS else MAX_LIMIT
    if isinstance(per_second, bool) or not isinstance(per_second, int) or not 1 <= per_second <= top:
        raise RuleError(rule_id, f"limit.{what}", f"must be a whole number from 1 to {top} (per second)")
    if what in RATE_LIMITS:
        if action != "deny":
            raise RuleError(rule_id, "action", "a rate limit holds the container to it: deny (mode: audit to "
                            "count what it would hold back)")  # fmt: skip
        if hold is not None:
            raise RuleError(rule_id, "hold", "applies to scan and SYN flood rules only")
    if what == "syn_per_source" and match:
        raise RuleError(rule_id, "match", "a SYN flood rule watches every source arriving at the nodes' XDP "
                        "interfaces: its match is {}")  # fmt: skip
    if set(match) - set(SCOPE_KEYS):
        raise RuleError(rule_id, "match", "a limit rule names only containers (container, cgroup_path, cgroup_id): "
                        "it counts every destination")  # fmt: skip
    held = "the source is dropped at XDP" if what == "syn_per_source" else "the container's calls are refused"
    if action == "allow":
        raise RuleError(rule_id, "action", f"a limit rule alerts, or denies ({held} for `hold` seconds)")
    if hold is not None:
        if action != "deny":
            raise RuleError(rule_id, "hold", f"applies to deny rules only (how long {held})")
        if isinstance(hold, bool) or not isinstance(hold, int) or not 1 <= hold <= MAX_HOLD:
            raise RuleError(rule_id, "hold", f"must be a whole number of seconds from 1 to {MAX_HOLD}")
    elif action == "deny" and what not in RATE_LIMITS:
        hold = DEFAULT_HOLD
    return (what, per_second), hold


def parse_expiry(rule_id: str, value) -> dt.datetime:
    """An ISO 8601 time with its zone (YAML may have read it as a datetime already)."""
    when = value
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            when = None
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise RuleError(rule_id, "expires", "must be a time with its zone, e.g. 2026-12-01T00:00:00Z")
    return when.astimezone(dt.UTC)


@dataclass(slots=True)
class Flow:
    """What a rule looks at in a connection."""

    dest_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dest_port: int
    cgroup_id: int | None = None
    cgroup_path: str | None = None
    container: str | None = None
    dest_name: str | None = None  # the name resolved for dest_ip; "": never resolved; None: not known

    @classmethod
    def of(cls, dest_ip: str, dest_port: int, **scope) -> Flow:
        try:
            addr = ip(dest_ip)
        except ValueError:
            addr = None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped  # a v4 socket reached through a v6 one is still v4 traffic
        return cls(dest_ip=addr, dest_port=dest_port, **scope)


@dataclass(slots=True)
class Exec:
    """What a rule looks at in an exec."""

    binary: str
    parents: tuple[str, ...] = ()  # the parent's binary path (first) and its task name, as known
    cgroup_id: int | None = None
    cgroup_path: str | None = None
    container: str | None = None
    fileless: bool = False
    sha256: str = ""  # its content's hash, when known


@dataclass(slots=True)
class Open:
    """What a rule looks at in an open."""

    path: str
    access: tuple[str, ...] | list[str]
    binary: str = ""  # the opener's binary, as known
    parents: tuple[str, ...] = ()  # its parent's binary and task name, as known
    cgroup_id: int | None = None
    cgroup_path: str | None = None
    container: str | None = None


class RuleSet:
    """Rules in evaluation order: lowest priority number first, then file/creation order.

    `evaluate` is first-match, through an index so its cost does not grow with the number
    of rules: rules with a destination network are found by one hash lookup per distinct
    prefix length; the others by exact port, exact container name or cgroup id; only what
    remains (globs, port ranges, match-all) is scanned. Candidates are tried in rank order.
    """

    def __init__(self, rules=(), version: int = 0):
        self.rules = sorted(rules, key=lambda r: (r.priority, r.order))
        self.version = version
        self.by_id = {r.id: r for r in self.rules}
        self._nets: dict[int, dict[int, dict[int, list[int]]]] = {4: {}, 6: {}}
        self._ports: dict[int, list[int]] = {}
        self._containers: dict[str, list[int]] = {}
        self._cgroups: dict[int, list[int]] = {}
        self._rest: list[int] = []
        self.exec_ranks = [rank for rank, rule in enumerate(self.rules) if rule.kind == "exec"]
        self.open_ranks = [rank for rank, rule in enumerate(self.rules) if rule.kind == "open"]
        for rank, rule in enumerate(self.rules):
            if rule.kind != "connect":
                continue
            if rule.dest_net is not None:
                net = rule.dest_net
                by_len = self._nets[net.version].setdefault(net.prefixlen, {})
                by_len.setdefault(int(net.network_address), []).append(rank)
            elif rule.port_range and rule.port_range[0] == rule.port_range[1]:
                self._ports.setdefault(rule.port_range[0], []).append(rank)
            elif rule.container is not None and not any(ch in rule.container for ch in "*?["):
                self._containers.setdefault(rule.container, []).append(rank)
            elif rule.cgroup_id is not None:
                self._cgroups.setdefault(rule.cgroup_id, []).append(rank)
            else:
                self._rest.append(rank)
        self._lengths = {family: sorted(table, reverse=True) for family, table in self._nets.items()}

    @classmethod
    def from_specs(cls, specs, version: int = 0) -> RuleSet:
        return cls([parse_rule(s, order=i) for i, s in enumerate(specs)], version)

    def _candidates(self, flow: Flow) -> list[int]:
        found = list(self._rest)
        found += self._ports.get(flow.dest_port, ())
        if flow.container is not None:
            found += self._containers.get(flow.container, ())
        if flow.cgroup_id is not None:
            found += self._cgroups.get(flow.cgroup_id, ())
        addr = flow.dest_ip
        if addr is not None:
            bits, value, table = addr.max_prefixlen, int(addr), self._nets[addr.version]
            for length in self._lengths[addr.version]:
                hit = table[length].get(value >> (bits - length) << (bits - length))
                if hit:
                    found += hit
        return found

    def evaluate(self, flow: Flow) -> Rule | None:
        """First matching rule, or None (no match means allow)."""
        for rank in sorted(self._candidates(flow)):
            rule = self.rules[rank]
            if rule.matches(flow):
                return rule
        return None

    def evaluate_exec(self, proc: Exec) -> Rule | None:
        """First matching exec rule, or None (execs are few: the exec rules are scanned)."""
        for rank in self.exec_ranks:
            if self.rules[rank].matches_exec(proc):
                return self.rules[rank]
        return None

    def evaluate_open(self, op: Open) -> Rule | None:
        """First matching file rule, or None (only watched opens reach here: scanned)."""
        for rank in self.open_ranks:
            if self.rules[rank].matches_open(op):
                return self.rules[rank]
        return None

    def evaluate_socket(self, kind: str, cgroup_id: int | None, cgroup_path: str | None,
                        container: str | None, path: str = "") -> Rule | None:  # fmt: skip
        """First matching socket or unix socket rule, or None (reports of these are rare: scanned)."""
        for rule in self.rules:
            if rule.matches_socket(kind, cgroup_id, cgroup_path, container, path):
                return rule
        return None

    def evaluate_linear(self, flow: Flow) -> Rule | None:
        """The definition `evaluate` must agree with (tests compare them)."""
        for rule in self.rules:
            if rule.matches(flow):
                return rule
        return None

    def __len__(self):
        return len(self.rules)
