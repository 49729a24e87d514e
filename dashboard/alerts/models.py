"""Where violations are sent (outputs), what was sent (notifications), and the dispatcher's
own state (dedupe windows, its place in the violation table, per-output delivery status).

The admin edits outputs; only the dispatcher (`manage.py alerts`) writes the rest, so an
admin saving an output never overwrites a delivery counter.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.utils import timezone

from monitor import rules as engine

KINDS = [
    ("webhook", "Webhook (JSON; Slack/Mattermost-compatible `text`)"),
    ("syslog", "Syslog (RFC 5424 over UDP or TCP)"),
    ("alertmanager", "Prometheus Alertmanager (API v2)"),
    ("email", "Email (Django's mail settings)"),
]
SEVERITY_CHOICES = [(s, s) for s in engine.SEVERITIES]
TARGET_HELP = (
    "webhook: its URL (http:// or https://); alertmanager: its base URL (http://host:9093); "
    "syslog: udp://host:514 or tcp://host:514 (add ?facility=local3 to choose the facility); "
    "email: the recipients, comma-separated"
)
SYSLOG_FACILITIES = {name: code for code, name in enumerate(
    ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"]
)} | {f"local{i}": 16 + i for i in range(8)}  # fmt: skip


def split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def check_target(kind: str, target: str) -> None:
    """Raise ValidationError unless target is what an output of this kind can deliver to."""
    if kind in ("webhook", "alertmanager"):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError({"target": f"a {kind} output needs an http:// or https:// URL, not {target!r}"})
    elif kind == "syslog":
        parts = urlsplit(target)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or not port:
            raise ValidationError(
                {"target": f"a syslog output needs udp://host:port or tcp://host:port, not {target!r}"}
            )
        facility = dict(parse_qsl(parts.query)).get("facility", "local0")
        if facility not in SYSLOG_FACILITIES:
            raise ValidationError(
                {"target": f"unknown syslog facility {facility!r}: one of {', '.join(SYSLOG_FACILITIES)}"}
            )
    elif kind == "email":
        addresses = split(target)
        if not addresses:
            raise ValidationError({"target": "an email output needs at least one recipient"})
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"target": f"not an email address: {address!r}"}) from None
    else:
        raise ValidationError({"kind": f"unknown output kind {kind!r}"})


class Output(models.Model):
    """One destination for alerts, and the route that selects what goes there."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=12, choices=KINDS)
    target = models.CharField(max_length=1000, help_text=TARGET_HELP)
    enabled = models.BooleanField(default=True)
    min_severity = models.CharField(
        max_length=10,
        choices=SEVERITY_CHOICES,
        default="info",
        help_text="Only rules this severe or more",
    )
    rules = models.CharField(
        max_length=500, blank=True, help_text="Rule ids or globs (deny-*), comma-separated; blank: every rule"
    )
    tags = models.CharField(max_length=500, blank=True, help_text="Any of these rule tags, comma-separated; blank: any")
    nodes = models.CharField(max_length=500, blank=True, help_text="Node names or globs, comma-separated; blank: all")
    containers = models.CharField(
        max_length=500, blank=True, help_text="Container names or globs, comma-separated; blank: all (and none)"
    )
    actions = models.CharField(
        max_length=20, default="alert,deny", help_text="Which verdicts: alert, deny, or both (comma-separated)"
    )
    dedupe_seconds = models.PositiveIntegerField(
        default=60,
        help_text="Violations of one rule by one container within this window are one notification with a count "
        "(the first is sent at once, the rest when the window ends); 0: one notification per violation",
    )
    timeout_seconds = models.FloatField(default=5.0, help_text="A delivery attempt slower than this has failed")
    from_env = models.BooleanField(
        default=False, editable=False, help_text="Set by CROSSEDGE_ALERTS: changed there, not here"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.kind})"

    def clean(self):
        check_target(self.kind, self.target)
        verdicts = split(self.actions)
        if not verdicts or set(verdicts) - {"alert", "deny"}:
            raise ValidationError({"actions": "alert, deny, or alert,deny"})
        if self.timeout_seconds <= 0 or self.timeout_seconds > 60:
            raise ValidationError({"timeout_seconds": "between 0 and 60 seconds"})

    @property
    def shown_target(self) -> str:
        """The target without credentials or path (webhook URLs are secrets), for every viewer."""
        if self.kind == "email":
            return f"{len(split(self.target))} recipient(s)"
        parts = urlsplit(self.target)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class OutputStatus(models.Model):
    """Delivery counters and the last error of an output (written by the dispatcher only)."""

    output = models.OneToOneField(Output, on_delete=models.CASCADE, related_name="status", primary_key=True)
    sent = models.PositiveBigIntegerField(default=0, help_text="Notifications delivered")
    failures = models.PositiveBigIntegerField(default=0, help_text="Delivery attempts that failed")
    given_up = models.PositiveBigIntegerField(default=0, help_text="Notifications dropped after retrying too long")
    folded = models.PositiveBigIntegerField(default=0, help_text="Violations counted into a window's notification")
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True, help_text="Set while its newest attempt failed")


class Notification(models.Model):
    """One message to one output: a violation, or a dedupe window's worth of them."""

    STATES = [("queued", "queued"), ("sent", "sent"), ("given_up", "given up")]
    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="notifications")
    key = models.CharField(max_length=400, help_text="What dedupes it: rule, node, container, verdict")
    violation_id = models.BigIntegerField(
        null=True, blank=True, help_text="The latest violation it covers (pruned later)"
    )
    count = models.PositiveBigIntegerField(default=1, help_text="Calls it stands for")
    first_ts = models.DateTimeField()
    last_ts = models.DateTimeField()
    summary = models.JSONField(default=dict)
    test = models.BooleanField(default=False)
    state = models.CharField(max_length=8, choices=STATES, default="queued")
    attempts = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["output", "state", "id"], name="notification_queue")]


class Window(models.Model):
    """A dedupe window: open since its first violation was sent; what came after is counted
    here and sent as one notification when it ends."""

    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=400)
    ends_at = models.DateTimeField()
    pending = models.PositiveBigIntegerField(default=0)
    first_ts = models.DateTimeField(null=True, blank=True)
    last_ts = models.DateTimeField(null=True, blank=True)
    violation_id = models.BigIntegerField(null=True, blank=True)
    summary = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["output", "key"], name="window_output_key")]
        indexes = [models.Index(fields=["ends_at"], name="window_ends")]


class Cursor(models.Model):
    """How far the dispatcher has routed the violation table: every id up to `last_id`, and
    (PostgreSQL, ids committed out of order) every id up to `settled` for certain."""

    name = models.CharField(max_length=32, unique=True)
    last_id = models.BigIntegerField(default=0)
    settled = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
