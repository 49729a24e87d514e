"""The audit trail: who signed in, changed rules or outputs, enrolled or revoked nodes,
exported data, from where, when. Written by the receivers and `record`, never edited."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

ACTIONS = [
    ("login", "signed in"),
    ("login_failed", "sign-in failed"),
    ("logout", "signed out"),
    ("password_changed", "password changed"),
    ("rule_created", "rule created"),
    ("rule_changed", "rule changed"),
    ("rule_deleted", "rule deleted"),
    ("policy_imported", "policy imported"),
    ("policy_exported", "policy exported"),
    ("node_enrolled", "node enrolled"),
    ("node_token_issued", "node token issued"),
    ("node_revoked", "node revoked"),
    ("node_restored", "node restored"),
    ("node_deleted", "node deleted"),
    ("events_exported", "events exported"),
    ("audit_exported", "audit trail exported"),
    ("api_token_issued", "API token issued"),
    ("test_alert", "test alert sent"),
    ("admin_added", "added in the admin"),
    ("admin_changed", "changed in the admin"),
    ("admin_deleted", "deleted in the admin"),
]


class AuditEntry(models.Model):
    ts = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150, help_text="user name, or the command or process that acted")
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    address = models.GenericIPAddressField(null=True, blank=True, help_text="where the request came from")
    action = models.CharField(max_length=24, choices=ACTIONS)
    target = models.CharField(max_length=300, blank=True, help_text="what it acted on")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["ts"], name="audit_ts"),
            models.Index(fields=["action", "-id"], name="audit_action"),
            models.Index(fields=["actor", "-id"], name="audit_actor"),
        ]

    def __str__(self):
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.actor}: {self.get_action_display()} {self.target}".rstrip()
