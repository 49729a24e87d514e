"""What the agents saw: every connection, every process exec and exit in a container, and
the ones a rule flagged.

The tables are append-mostly and read newest-first, so every index ends in -ts. A
violation copies the few fields its feed and filters need (`kind` and `target`: the
destination of a connection, the binary of a process), so the violation feed never joins
the (much larger) event tables. An agent numbers all its events in one sequence, so
(node, seq) is unique across the event tables.
"""

import errno

from django.db import models

from dashboard.fleet.models import Container, Node

__all__ = ["ConnectionEvent", "ProcessEvent", "Violation", "Rollup", "VERDICTS", "KINDS"]

VERDICTS = [("allow", "allow"), ("alert", "alert"), ("deny", "deny")]
OPS = [("connect", "connect"), ("sendmsg", "sendto/sendmsg"), ("packet", "packet (raw, ping, SCTP)")]
KINDS = [("connect", "connection"), ("exec", "process exec"), ("exit", "process exit"), ("open", "file open"),
         ("call", "refused call"), ("scan", "scan"), ("flood", "SYN flood"), ("limit", "rate limit"),
         ("dns", "DNS answer"), ("socket", "socket made")]  # fmt: skip


class ConnectionEvent(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField(help_text="The agent's sequence number: (node, seq) is unique.")
    ts = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cgroup_id = models.BigIntegerField()
    cgroup_path = models.CharField(max_length=1024, blank=True)
    pid = models.IntegerField()
    tid = models.IntegerField()
    uid = models.BigIntegerField()
    gid = models.BigIntegerField()
    comm = models.CharField(max_length=64)
    family = models.PositiveSmallIntegerField()
    dest_ip = models.GenericIPAddressField(unpack_ipv4=False)
    dest_port = models.PositiveIntegerField()
    dest_name = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="The name the container resolved dest_ip from; empty: it never resolved it; null: not known",
    )
    dest_port_hi = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="A scan summed in the kernel: its calls to new destinations, from dest_ip (the first) on, "
        "ports dest_port to dest_port_hi; null for a connection",
    )
    result = models.IntegerField(null=True, help_text="connect() return: 0 or -errno")
    verdict = models.CharField(max_length=5, choices=VERDICTS)
    rule_id = models.CharField(max_length=64, blank=True)
    policy_version = models.IntegerField(default=0)
    minute = models.BigIntegerField(default=0, help_text="ts in whole minutes since the epoch: charts group on it")
    count = models.PositiveIntegerField(default=1, help_text="Connections this row stands for (>1: folded in a storm)")
    op = models.CharField(max_length=8, choices=OPS, default="connect", help_text="The call judged.")
    unenforced = models.CharField(
        max_length=200, blank=True, help_text="A deny verdict the kernel did not apply: why (empty otherwise)."
    )

    class Meta:
        ordering = ["-ts", "-id"]
        constraints = [models.UniqueConstraint(fields=["node", "seq"], name="event_unique_node_seq")]
        indexes = [
            models.Index(fields=["-ts"], name="event_ts"),
            models.Index(fields=["container", "-ts"], name="event_container_ts"),
            models.Index(fields=["verdict", "-ts"], name="event_verdict_ts"),
            models.Index(fields=["rule_id", "-ts"], name="event_rule_ts"),
            models.Index(fields=["dest_ip", "-ts"], name="event_dest_ts"),
            models.Index(fields=["dest_name", "-ts"], name="event_name_ts"),
            models.Index(fields=["received_at"], name="event_received"),  # a feed's catch-up
        ]

    def __str__(self):
        return f"{self.comm}[{self.pid}] -> {self.dest_ip}:{self.ports}"

    @property
    def ports(self) -> str:
        """The port, or a scan's port range."""
        return f"{self.dest_port}" if self.dest_port_hi is None else f"{self.dest_port}-{self.dest_port_hi}"


class ProcessEvent(models.Model):
    """What a process did in a monitored container: exec'd, exited (bpfscripts/process.bpf.h),
    opened a watched file (file.bpf.h), or made a call refused to keep an open deny whole. One
    table, as all are acts of one process with one identity (node, pid, start_ns): a
    process's page lists them together."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField(help_text="The agent's sequence number: (node, seq) is unique.")
    kind = models.CharField(max_length=7, choices=KINDS[1:])
    ts = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    minute = models.BigIntegerField(default=0)
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cgroup_id = models.BigIntegerField()
    cgroup_path = models.CharField(max_length=1024, blank=True)
    pid = models.IntegerField()
    ppid = models.IntegerField()
    start_ns = models.BigIntegerField(help_text="The process's start (monotonic ns): with pid, its identity.")
    uid = models.BigIntegerField()
    gid = models.BigIntegerField()
    comm = models.CharField(max_length=64)
    parent_comm = models.CharField(max_length=64, blank=True)
    parent_binary = models.CharField(max_length=1024, blank=True)
    binary = models.CharField(
        max_length=1024, blank=True, help_text="The file that ran, as resolved (an open: the opener's binary)"
    )
    given = models.CharField(
        max_length=1024, blank=True,
        help_text="exec: the name it was run by, when not the file's path (a link, another spelling, a loader); "
        "open: the name a failed open gave (there is no file)",
    )  # fmt: skip
    fileless = models.BooleanField(default=False, help_text="The file has no name left: memfd_create, deleted")
    sha256 = models.CharField(
        max_length=64, blank=True, help_text="exec: the content's SHA-256, where a content hash rule had it hashed"
    )
    path = models.CharField(
        max_length=1024, blank=True, help_text="open: the opened file's path, as resolved; call: the call refused"
    )
    access = models.CharField(max_length=32, blank=True, help_text="open: read, write, create, truncate")
    result = models.IntegerField(null=True, blank=True, help_text="open: the file descriptor, or -errno")
    args = models.JSONField(default=list, blank=True)
    cut = models.BooleanField(default=False, help_text="The binary path or arguments were cut to fit.")
    exit_code = models.IntegerField(null=True, blank=True, help_text="Wait status: code << 8, or the signal")
    lifetime_ns = models.BigIntegerField(null=True, blank=True)
    verdict = models.CharField(max_length=5, choices=VERDICTS)
    rule_id = models.CharField(max_length=64, blank=True)
    policy_version = models.IntegerField(default=0)
    count = models.PositiveIntegerField(default=1)
    unenforced = models.CharField(max_length=200, blank=True)
    enforced = models.BooleanField(default=False, help_text="A deny the kernel applied: killed at the exec or open.")

    class Meta:
        ordering = ["-ts", "-id"]
        constraints = [models.UniqueConstraint(fields=["node", "seq"], name="process_unique_node_seq")]
        indexes = [
            models.Index(fields=["-ts"], name="process_ts"),
            models.Index(fields=["container", "-ts"], name="process_container_ts"),
            models.Index(fields=["received_at"], name="process_received"),
            models.Index(fields=["kind", "container", "-ts"], name="process_kind_container_ts"),
        ]

    def __str__(self):
        if self.kind == "open":
            return f"open {self.path} ({self.access}) by {self.comm}[{self.pid}]"
        if self.kind == "call":
            return f"{self.path} refused to {self.comm}[{self.pid}]"
        if self.kind == "socket":
            return f"{self.path} by {self.comm}[{self.pid}]"
        return f"{self.kind} {self.binary or self.comm}[{self.pid}]"

    @property
    def result_text(self) -> str:
        """An open's outcome as a user reads it: "ok" or the errno's name."""
        if self.result is None:
            return ""
        if self.enforced:
            return "killed at the open"  # the open ran; its process died before it could use it
        if self.result >= 0:
            return "ok"
        return errno.errorcode.get(-self.result, str(self.result))

    @property
    def lifetime_ms(self) -> float | None:
        return None if self.lifetime_ns is None else round(self.lifetime_ns / 1e6, 1)

    @property
    def exit_text(self) -> str:
        """The exit as a shell says it: "exit 3", "killed by signal 9"."""
        if self.exit_code is None:
            return ""
        if self.exit_code & 0x7F:
            return f"killed by signal {self.exit_code & 0x7F}"
        return f"exit {(self.exit_code >> 8) & 0xFF}"


class Violation(models.Model):
    kind = models.CharField(max_length=7, choices=KINDS, default="connect")
    seq = models.BigIntegerField(
        null=True, blank=True, help_text="A violation that is no event's (a SYN flood): the agent's sequence number"
    )
    event = models.OneToOneField(
        ConnectionEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="violation"
    )
    process = models.OneToOneField(
        ProcessEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="violation"
    )
    target = models.CharField(
        max_length=1024, blank=True, help_text="What was reached: host:port, a binary, or a file path (its access)"
    )
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ts = models.DateTimeField()
    rule_id = models.CharField(max_length=64)
    action = models.CharField(max_length=5, choices=VERDICTS)
    severity = models.CharField(max_length=10, blank=True)
    enforced = models.BooleanField(default=False, help_text="The kernel refused the connection.")
    audit = models.BooleanField(default=False, help_text="An audit-mode deny: reported, let through.")
    unenforced = models.CharField(
        max_length=200, blank=True, help_text="A deny the kernel did not apply: why (the connection went through)."
    )
    op = models.CharField(
        max_length=8, choices=OPS, default="connect", blank=True, help_text="The call judged (connections)."
    )
    count = models.PositiveIntegerField(default=1, help_text="Calls this row stands for (counted in the kernel)")
    comm = models.CharField(max_length=64)
    pid = models.IntegerField()
    dest_ip = models.GenericIPAddressField(unpack_ipv4=False, null=True, blank=True)
    dest_port = models.PositiveIntegerField(null=True, blank=True)
    dest_name = models.CharField(max_length=255, null=True, blank=True, help_text="As on the connection")

    class Meta:
        ordering = ["-ts", "-id"]
        indexes = [
            models.Index(fields=["-ts"], name="violation_ts"),
            models.Index(fields=["rule_id", "-ts"], name="violation_rule_ts"),
            models.Index(fields=["container", "-ts"], name="violation_container_ts"),
            models.Index(fields=["action", "-ts"], name="violation_action_ts"),
            models.Index(fields=["node", "seq"], name="violation_node_seq"),
        ]

    def __str__(self):
        return f"{self.rule_id}: {self.comm}[{self.pid}] -> {self.target}"


class Rollup(models.Model):
    """Events past their retention, summed per minute (dashboard/events/retention.py): what
    a container did, under which rule and verdict, to which target, and how often. Several
    rows may share a key (pruned in different batches): readers sum them."""

    minute = models.BigIntegerField(help_text="Whole minutes since the epoch")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=7, choices=KINDS)
    verdict = models.CharField(max_length=5, choices=VERDICTS)
    rule_id = models.CharField(max_length=64, blank=True)
    target = models.CharField(max_length=1024, blank=True, help_text="host:port, a binary, or a file path")
    count = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["minute"], name="rollup_minute"),
            models.Index(fields=["rule_id", "minute"], name="rollup_rule_minute"),
            models.Index(fields=["container", "minute"], name="rollup_container_minute"),
        ]

    def __str__(self):
        return f"{self.minute} {self.kind} {self.target} ×{self.count}"
