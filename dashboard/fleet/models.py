"""Edge nodes (one agent each) and the containers seen on them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone

from monitor.protocol import HEARTBEAT_SECONDS

__all__ = ["Node", "Container"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_count(value) -> bool:
    """An integer an agent reported (not a bool, not a string): health is data, not trusted."""
    return isinstance(value, int) and not isinstance(value, bool)


def _sockets(kernel: dict) -> str:
    """How a node judges packet and unix sockets, as its agent said ("" from an older one)."""
    packet, unix = (str(kernel.get(k) or "") for k in ("packet_sockets", "unix_sockets"))
    return f"packet sockets: {packet or '?'}; unix sockets: {unix or '?'}" if packet or unix else ""


def as_count(value) -> int:
    return value if is_count(value) else 0


TOKEN_PREFIX = "cxn_"  # noqa: S105 (a prefix, not a secret): node tokens never start like an option ("-...")


class Node(models.Model):
    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    revoked = models.BooleanField(default=False, help_text="A revoked node's agent is refused.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    kernel = models.CharField(max_length=255, blank=True)
    agent_version = models.CharField(max_length=50, blank=True)
    health = models.JSONField(default=dict, blank=True)
    last_seq = models.BigIntegerField(default=0, help_text="Highest event sequence number stored.")
    policy_version = models.IntegerField(default=0, help_text="Policy version the agent applied.")
    policy_error = models.TextField(blank=True)
    features = models.JSONField(default=dict, blank=True, help_text="Kernel and tool probe from the agent's hello.")
    rejected_messages = models.PositiveBigIntegerField(default=0, help_text="Agent messages refused as malformed.")
    last_rejection = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def issue_token(self) -> str:
        """Set a new random token; returns it (only its hash is kept). The prefix keeps it
        from starting with "-", which `runagent --token TOKEN` would take for an option."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.token_hash = hash_token(token)
        return token

    @classmethod
    def authenticate(cls, token: str | None) -> Node | None:
        if not token or len(token) > 200:
            return None
        return cls.objects.filter(token_hash=hash_token(token), revoked=False).first()

    @property
    def losses(self) -> dict[str, int]:
        """Events the node reported as lost, by stage (from its last heartbeat)."""
        health = self.health if isinstance(self.health, dict) else {}

        backends = health.get("backends") if isinstance(health.get("backends"), dict) else {}
        return {
            "kernel_buffer": sum(as_count(b.get("lost_events")) for b in backends.values() if isinstance(b, dict))
            + as_count(health.get("kernel_lost")),
            "agent_queue": as_count(health.get("outbox_dropped")),
            "spool_cap": as_count(health.get("spool_dropped")),
        }

    @property
    def traffic_lost_bytes(self) -> int:
        """Bytes the packet programs could not count per flow (their tables full): not events."""
        raw = (self.health or {}).get("traffic") if isinstance(self.health, dict) else None
        return as_count(raw.get("lost_bytes")) if isinstance(raw, dict) else 0

    @property
    def not_enforced(self) -> dict:
        """Deny verdicts the kernel did not apply (the calls went through), with the reasons."""
        health = self.health if isinstance(self.health, dict) else {}
        reasons = health.get("not_enforced_reasons") if isinstance(health.get("not_enforced_reasons"), dict) else {}
        return {
            "count": as_count(health.get("not_enforced")),
            "reasons": {str(k): v for k, v in reasons.items() if is_count(v)},
        }

    @property
    def holds(self) -> dict[str, float]:
        """New containers' first execs held until the agent listed them: held, released, expired, max_ms."""
        raw = (self.health or {}).get("holds") if isinstance(self.health, dict) else None
        raw = raw if isinstance(raw, dict) else {}
        return {k: v for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def dns(self) -> dict[str, int]:
        """DNS answers the node's containers received: read by the kernel program (kernel_answers),
        not sent on to the agent (kernel_lost, counted), names learned, unreadable."""
        raw = (self.health or {}).get("dns") if isinstance(self.health, dict) else None
        return {str(k): v for k, v in raw.items() if is_count(v)} if isinstance(raw, dict) else {}

    @property
    def degraded(self) -> list[str]:
        """What the node runs without, as its agent said (strings only)."""
        raw = self.health.get("degraded") if isinstance(self.health, dict) else None
        return [str(r) for r in raw] if isinstance(raw, list) else []

    @property
    def enforcement(self) -> dict:
        """The kernel part of the last heartbeat, with its types checked ({} without enforcement).
        The agent's word is data, not trusted structure: anything malformed is left out."""
        raw = (self.health or {}).get("kernel") if isinstance(self.health, dict) else None
        if not isinstance(raw, dict):
            return {}
        version = raw.get("policy_version")
        notes = [n for n in raw.get("notes") or [] if isinstance(n, dict) and isinstance(n.get("rule_id"), str)]
        counters = raw.get("counters") if isinstance(raw.get("counters"), dict) else {}
        entries = raw.get("entries") if isinstance(raw.get("entries"), dict) else {}
        xdp = raw.get("xdp") if isinstance(raw.get("xdp"), dict) else {}
        return {
            "policy_version": version if isinstance(version, int) and not isinstance(version, bool) else None,
            "attached": len(raw["attached"]) if isinstance(raw.get("attached"), list) else 0,
            "containers": raw["containers"] if isinstance(raw.get("containers"), int) else 0,
            "entries": sum(v for v in entries.values() if isinstance(v, int)),
            "notes": [{"rule_id": n["rule_id"], "message": str(n.get("message", ""))} for n in notes],
            "counters": {str(k): v for k, v in counters.items() if is_count(v)},
            "error": str(raw.get("error") or ""),
            "lifecycle_error": str(raw.get("lifecycle_error") or ""),
            "files_error": str(raw.get("files_error") or ""),
            "files": str(raw.get("files") or ""),
            "sockets": _sockets(raw),
            "generation": str(raw.get("generation") or ""),
            "xdp": {str(k): str(v) for k, v in xdp.items()},
        }

    def status(self, now=None) -> str:
        """online, unknown (heartbeats stopped), never (no agent yet) or revoked."""
        if self.revoked:
            return "revoked"
        if self.last_seen_at is None:
            return "never"
        now = now or timezone.now()
        return "online" if now - self.last_seen_at <= timedelta(seconds=3 * HEARTBEAT_SECONDS) else "unknown"


class Container(models.Model):
    """A container seen on a node; the key is the cgroup path (ids are reused by the kernel)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="containers")
    cgroup_path = models.CharField(max_length=1024)
    cgroup_id = models.BigIntegerField()
    runtime = models.CharField(max_length=20)
    container_id = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    pod_uid = models.CharField(max_length=64, blank=True)
    image = models.CharField(max_length=255, blank=True, help_text="As the runtime's metadata names it.")
    labels = models.JSONField(default=dict, blank=True, help_text="The runtime's labels (Docker; Kubernetes' too).")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["node", "cgroup_path"], name="container_unique_path")]
        indexes = [models.Index(fields=["name"]), models.Index(fields=["container_id"])]

    @property
    def k8s_pod(self) -> str:
        return str((self.labels or {}).get("io.kubernetes.pod.name", ""))

    @property
    def k8s_namespace(self) -> str:
        return str((self.labels or {}).get("io.kubernetes.pod.namespace", ""))

    def __str__(self):
        return f"{self.name} ({self.node})"
