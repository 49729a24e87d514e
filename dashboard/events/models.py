"""What the agents saw: every connection, and the ones a rule flagged.

Both tables are append-mostly and read newest-first, so every index ends in -ts. A
violation copies the few fields its feed and filters need, so the violation feed never
joins the (much larger) connection table.
"""

from django.db import models

from dashboard.fleet.models import Container, Node

__all__ = ["ConnectionEvent", "Violation", "VERDICTS"]

VERDICTS = [("allow", "allow"), ("alert", "alert"), ("deny", "deny")]
OPS = [("connect", "connect"), ("sendmsg", "sendto/sendmsg")]


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
        ]

    def __str__(self):
        return f"{self.comm}[{self.pid}] -> {self.dest_ip}:{self.dest_port}"


class Violation(models.Model):
    event = models.OneToOneField(ConnectionEvent, on_delete=models.CASCADE, related_name="violation")
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
    op = models.CharField(max_length=8, choices=OPS, default="connect", help_text="The call judged.")
    count = models.PositiveIntegerField(default=1, help_text="Calls this row stands for (counted in the kernel)")
    comm = models.CharField(max_length=64)
    pid = models.IntegerField()
    dest_ip = models.GenericIPAddressField(unpack_ipv4=False)
    dest_port = models.PositiveIntegerField()

    class Meta:
        ordering = ["-ts", "-id"]
        indexes = [
            models.Index(fields=["-ts"], name="violation_ts"),
            models.Index(fields=["rule_id", "-ts"], name="violation_rule_ts"),
            models.Index(fields=["container", "-ts"], name="violation_container_ts"),
            models.Index(fields=["action", "-ts"], name="violation_action_ts"),
        ]

    def __str__(self):
        return f"{self.rule_id}: {self.comm}[{self.pid}] -> {self.dest_ip}:{self.dest_port}"
