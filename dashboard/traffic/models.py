"""Traffic per container and flow, one row per flow per minute, as the agents measured it
in the kernel (monitor/traffic.py): what the traffic page, the billing API and exports sum."""

from __future__ import annotations

from django.db import models

from dashboard.fleet.models import Container, Node

COUNTERS = ("bytes_in", "bytes_out", "payload_in", "payload_out", "packets_in", "packets_out")


class TrafficMinute(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField(help_text="The agent's number for the record (a resent batch stores nothing twice)")
    minute = models.BigIntegerField(help_text="Whole minutes since the epoch")
    ts = models.DateTimeField(help_text="The minute's start")
    container = models.ForeignKey(Container, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cgroup_id = models.BigIntegerField()
    cgroup_path = models.CharField(max_length=1024)
    family = models.PositiveSmallIntegerField()
    proto = models.CharField(max_length=8, help_text="tcp, udp, icmp, icmpv6, a number, or other (a full table)")
    local_port = models.PositiveIntegerField()
    remote_ip = models.GenericIPAddressField(unpack_ipv4=False)
    remote_port = models.PositiveIntegerField()
    bytes_in = models.BigIntegerField(help_text="IP packets' bytes, headers included")
    bytes_out = models.BigIntegerField()
    payload_in = models.BigIntegerField(help_text="Bytes above TCP/UDP: what the applications sent")
    payload_out = models.BigIntegerField()
    packets_in = models.BigIntegerField(help_text="Segments")
    packets_out = models.BigIntegerField()

    class Meta:
        ordering = ["-minute", "-id"]
        constraints = [models.UniqueConstraint(fields=["node", "seq"], name="traffic_node_seq")]
        indexes = [
            models.Index(fields=["minute"], name="traffic_minute"),
            models.Index(fields=["container", "minute"], name="traffic_container_minute"),
        ]

    def __str__(self):
        return f"{self.cgroup_path} {self.proto} {self.local_port} <-> {self.remote_ip}:{self.remote_port}"
