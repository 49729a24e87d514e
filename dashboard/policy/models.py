"""Rules as staff edit them, and the policy version agents follow.

Validation is the agent's own rule parser (monitor.rules.parse_rule), so the admin, the
YAML import and the agent agree on what a valid rule is.
"""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models

from monitor import rules as engine

from . import checks

__all__ = ["Rule", "PolicyState", "RuleChange"]

ACTION_CHOICES = [(a, a) for a in engine.ACTIONS]
SEVERITY_CHOICES = [(s, s) for s in engine.SEVERITIES]
MODE_CHOICES = [(m, m) for m in engine.MODES]


def form_field(engine_field: str) -> str:
    """The model field an engine error names ("match.dest_ip" -> "dest_ip", "id" -> "rule_id")."""
    name = engine_field.removeprefix("match.").removeprefix("limit.")
    return {"id": "rule_id", "limit": "new_destinations", "match": NON_FIELD_ERRORS}.get(name, name)


class Rule(models.Model):
    rule_id = models.CharField("id", max_length=64, unique=True, help_text="e.g. rule-001")
    description = models.CharField(max_length=500, blank=True)
    priority = models.PositiveIntegerField(default=engine.DEFAULT_PRIORITY, help_text="Lower runs first.")
    action = models.CharField(max_length=10, choices=ACTION_CHOICES)
    mode = models.CharField(
        max_length=10,
        choices=MODE_CHOICES,
        default=engine.DEFAULT_MODE,
        help_text="audit: a deny is reported and counted in the kernel but the connection goes through",
    )
    severity = models.CharField(max_length=10, choices=SEVERITY_CHOICES, default=engine.DEFAULT_SEVERITY)
    tags = models.JSONField(default=list, blank=True, help_text='e.g. ["T1071"]')
    cgroup_id = models.BigIntegerField(null=True, blank=True, help_text="cgroup2 id of one container")
    cgroup_path = models.CharField(max_length=1024, blank=True, help_text="glob, e.g. /system.slice/docker-*")
    container = models.CharField(max_length=255, blank=True, help_text="container name or glob")
    dest_ip = models.CharField("destination CIDR", max_length=64, blank=True, help_text="e.g. 127.10.10.5/32")
    dest_fqdn = models.CharField(
        "destination name",
        max_length=255,
        blank=True,
        help_text="the name the container resolved: api.example.com, *.example.com (any name below it) or none (an "
        "address it never resolved, DNS servers excepted); a deny holds in the kernel from the answer on",
    )
    dest_port = models.CharField("destination port", max_length=11, blank=True, help_text="443 or 8000-8080")
    binary = models.CharField(
        max_length=1024,
        blank=True,
        help_text="exec rule: the file that runs, as resolved (/bin/sh is /usr/bin/dash on Debian), e.g. /usr/bin/nc, "
        "/dev/shm/*, */nc or /usr/bin/*sh (judged in the kernel; a deny kills at exec)",
    )
    parent = models.CharField(
        max_length=1024, blank=True, help_text="exec rule: the parent's binary, as resolved, e.g. */nginx"
    )
    fileless = models.BooleanField(
        default=False, help_text="exec rule: only a file with no name left (memfd_create, a deleted file)"
    )
    sha256 = models.JSONField(
        "content SHA-256",
        null=True,
        blank=True,
        help_text='exec rule: the file\'s content is one of these, e.g. ["9f86d0…"] (a copy under any name; a file '
        "new to the node is held at its exec until hashed)",
    )
    path = models.CharField(
        max_length=1024,
        blank=True,
        help_text="file rule: the opened file's path, as resolved, e.g. /etc/shadow, /etc/*, *.pem or /etc/*.conf "
        "(judged in the kernel; a deny kills at the open); binary and parent then name the opener",
    )
    access = models.JSONField(
        default=list,
        blank=True,
        help_text='file rule: which accesses, e.g. ["write", "create", "truncate"] (empty: any)',
    )
    source_ip = models.CharField(
        "source CIDR",
        max_length=64,
        blank=True,
        help_text="ingress rule: packets from this network, judged at XDP on the nodes' chosen interfaces "
        "(e.g. 198.18.7.0/24); a rule of its own, naming nothing else",
    )
    expires = models.DateTimeField(
        null=True, blank=True, help_text="ingress rule: when the block ends by itself (UTC), e.g. 2026-12-01 00:00"
    )
    new_destinations = models.PositiveIntegerField(
        "new destinations per second",
        null=True,
        blank=True,
        help_text="scan rule: a container reaching this many destinations it had not reached before within one "
        "second; alert raises one scan violation, deny also refuses the container's connections for `hold`",
    )
    syn_per_source = models.PositiveIntegerField(
        "SYNs per second from one source",
        null=True,
        blank=True,
        help_text="SYN flood rule (match nothing else): a source sending this many TCP SYNs within one second to the "
        "nodes' XDP interfaces; alert raises one violation, deny also drops the source at XDP for `hold`",
    )
    egress_bytes_per_s = models.PositiveBigIntegerField(
        "egress bytes per second",
        null=True,
        blank=True,
        help_text="rate limit (deny; audit counts only): the container's outgoing bytes per second, held in the "
        "kernel (TCP is told to slow down, then packets are dropped); e.g. 1000000",
    )
    connections_per_s = models.PositiveIntegerField(
        "connections per second",
        null=True,
        blank=True,
        help_text="rate limit (deny; audit counts only): the container's connect() calls per second; beyond a "
        "burst of 0.1 s they fail with EPERM",
    )
    hold = models.PositiveIntegerField(
        "hold (seconds)",
        null=True,
        blank=True,
        help_text="scan or SYN flood rule, deny: how long the container's connections are refused, or the source "
        f"dropped (default {engine.DEFAULT_HOLD})",
    )
    socket = models.JSONField(
        "sockets",
        default=list,
        blank=True,
        help_text="socket rule (naming nothing but containers): the kinds of socket it judges when one is made, of "
        '"raw" (raw IP), "packet" (AF_PACKET), "icmp" (ping sockets) and "sctp", e.g. ["raw", "packet"]; a deny '
        "refuses socket() with EPERM (a packet socket's caller is killed)",
    )
    unix_path = models.CharField(
        "unix socket path",
        max_length=107,
        blank=True,
        help_text="unix socket rule (naming nothing but containers): a socket's path as a process connects to it, "
        "e.g. /var/run/docker.sock (/run/docker.sock too), or @name for an abstract one; a deny makes connect() "
        "fail with EPERM (README: the names it does not hold against)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self):
        return self.rule_id

    @property
    def what(self) -> str:
        """What the rule looks at, as staff read it: a destination, an exec, or an open."""
        opener = f" by {self.binary}" if self.binary else ""
        opener += f" from {self.parent}" if self.parent else ""
        if self.new_destinations:
            held = f", refused for {self.hold} s" if self.hold else ""
            return f"scan: {self.new_destinations} new destinations in 1 s{held}"
        if self.egress_bytes_per_s:
            return f"limit: egress {self.egress_bytes_per_s:,} B/s"
        if self.connections_per_s:
            return f"limit: {self.connections_per_s:,} connections/s"
        if self.syn_per_source:
            held = f", dropped for {self.hold} s" if self.hold else ""
            return f"SYN flood: {self.syn_per_source} SYNs in 1 s from one source{held}"
        if self.socket:
            return f"{', '.join(self.socket)} sockets made"
        if self.unix_path:
            return f"unix socket {self.unix_path}"
        if self.source_ip:
            until = f" until {self.expires:%Y-%m-%d %H:%M} UTC" if self.expires else ""
            return f"packets from {self.source_ip}{until}"
        if self.path:
            return f"open {self.path}" + (f" ({', '.join(self.access)})" if self.access else "") + opener
        if self.binary or self.parent or self.fileless or self.sha256:
            what = f"exec {self.binary or 'any'}" + (" (fileless)" if self.fileless else "")
            what += f" with content {', '.join(h[:12] + '…' for h in self.sha256[:3])}" if self.sha256 else ""
            return what + (f" from {self.parent}" if self.parent else "")
        return f"{self.dest_fqdn or self.dest_ip or 'any'} port {self.dest_port or 'any'}"

    def to_spec(self) -> dict:
        match = {}
        if self.cgroup_id is not None:
            match["cgroup_id"] = self.cgroup_id
        for key in ("cgroup_path", "container", "dest_ip", "dest_fqdn", "source_ip", "binary", "parent", "path",
                    "access", "socket", "unix_path"):  # fmt: skip
            if getattr(self, key):
                match[key] = getattr(self, key)
        if self.dest_port:
            match["dest_port"] = int(self.dest_port) if self.dest_port.isdigit() else self.dest_port
        if self.fileless:
            match["fileless"] = True
        if self.sha256:
            match["sha256"] = self.sha256
        extra = {"expires": self.expires.isoformat()} if self.expires else {}
        limit = {k: getattr(self, k) for k in engine.LIMITS if getattr(self, k) is not None}
        if limit:
            extra["limit"] = limit  # both set: the engine refuses it (a rule has one limit)
        if self.hold is not None:
            extra["hold"] = self.hold
        return {
            "id": self.rule_id,
            "description": self.description,
            "priority": self.priority,
            "severity": self.severity,
            "tags": self.tags if self.tags is not None else [],
            "match": match,
            "action": self.action,
            "mode": self.mode,
        } | extra

    def set_from(self, rule: engine.Rule) -> None:
        """Copy a validated engine rule into this row (normalised: CIDR and port as text)."""
        self.rule_id = rule.id
        self.description = rule.description
        self.priority = rule.priority
        self.severity = rule.severity
        self.tags = list(rule.tags)
        self.action = rule.action
        self.mode = rule.mode
        self.cgroup_id = rule.cgroup_id
        self.cgroup_path = rule.cgroup_path or ""
        self.container = rule.container or ""
        self.dest_ip = str(rule.dest_net) if rule.dest_net else ""
        self.dest_fqdn = str(rule.dest_fqdn) if rule.dest_fqdn else ""
        self.dest_port = str(engine.format_port(*rule.port_range)) if rule.port_range else ""
        self.binary = rule.binary or ""
        self.parent = rule.parent or ""
        self.fileless = rule.fileless
        self.sha256 = list(rule.sha256) if rule.sha256 is not None else None
        self.path = rule.path or ""
        self.access = list(rule.access or ())
        self.socket = list(rule.socket or ())
        self.unix_path = rule.unix_path or ""
        self.source_ip = str(rule.source_net) if rule.source_net else ""
        self.expires = rule.expires
        for name in engine.LIMITS:  # one field per kind of limit, named as in the policy file
            setattr(self, name, rule.limit[1] if rule.limit and rule.limit[0] == name else None)
        self.hold = rule.hold

    def clean(self):
        try:
            rule = engine.parse_rule(self.to_spec())
        except engine.RuleError as exc:
            raise ValidationError({form_field(exc.field): exc.message}) from None
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc)) from None
        if problem := checks.unenforceable(rule):
            raise ValidationError({problem[0]: problem[1]})
        self.set_from(rule)


class PolicyState(models.Model):
    """A single row: the policy version, bumped in the same transaction as any rule change."""

    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    @classmethod
    def current(cls) -> int:
        row = cls.objects.filter(pk=1).first()
        return row.version if row else 0


class RuleChange(models.Model):
    """One change to one rule: the history shown on the rule's page."""

    ACTIONS = [("created", "created"), ("changed", "changed"), ("deleted", "deleted")]
    rule_id = models.CharField(max_length=64)
    action = models.CharField(max_length=10, choices=ACTIONS)
    actor = models.CharField(max_length=150, help_text="user name, or the command that made the change")
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ts = models.DateTimeField(auto_now_add=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-ts", "-id"]
        indexes = [models.Index(fields=["rule_id", "-ts"], name="rulechange_rule_ts")]

    def __str__(self):
        return f"{self.rule_id} {self.action} by {self.actor}"

    def changed_fields(self) -> list[tuple[str, object, object]]:
        """(field, before, after) for what differs, match fields flattened."""

        def flat(spec):
            spec = dict(spec or {})
            return {
                **{k: v for k, v in spec.items() if k != "match"},
                **{f"match.{k}": v for k, v in (spec.get("match") or {}).items()},
            }

        old, new = flat(self.before), flat(self.after)
        return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
