"""The audit trail: sign-ins (and failures, from where), rule changes from every entry
point, node enrolment, re-keying and revocation, exports, admin changes; the page's
filters and export, its permission, read-only entries and retention."""

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from dashboard.audit.actor import acting_as
from dashboard.audit.models import AuditEntry
from dashboard.events.retention import prune
from dashboard.fleet.models import Node
from dashboard.policy.models import Rule

pytestmark = pytest.mark.django_db

POLICY = """rules:
  - id: deny-ssh
    match: {dest_port: 22}
    action: deny
"""


def trail(logins=True):
    """(actor, action, target) in order; logins=False leaves out the tests' own force_login."""
    entries = AuditEntry.objects.order_by("id")
    return [(e.actor, e.action, e.target) for e in (entries if logins else entries.exclude(action="login"))]


def test_sign_ins_failures_and_sign_outs_are_recorded_with_where_from(client, staff, settings):
    login = reverse("login")
    client.post(login, {"username": "staff", "password": "wrong"}, REMOTE_ADDR="192.0.2.7")
    client.post(login, {"username": "staff", "password": "pw-staff-123"}, REMOTE_ADDR="192.0.2.7")
    client.post(reverse("logout"), REMOTE_ADDR="192.0.2.7")
    assert trail() == [("staff", "login_failed", "staff"), ("staff", "login", "staff"), ("staff", "logout", "staff")]
    assert set(AuditEntry.objects.values_list("address", flat=True)) == {"192.0.2.7"}
    assert AuditEntry.objects.get(action="login").user == staff
    # Behind a proxy: the forwarded address only from a trusted proxy; else the proxy's own.
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    client.post(
        login, {"username": "staff", "password": "x"}, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.9"
    )
    client.post(login, {"username": "staff", "password": "x"}, REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert list(AuditEntry.objects.filter(action="login_failed").values_list("address", flat=True).order_by("id")) == [
        "192.0.2.7", "198.51.100.9", "10.9.9.9"
    ]  # fmt: skip


def test_a_password_change_is_recorded_not_the_password(client, staff):
    client.force_login(staff)
    client.post(reverse("password_change"), {"old_password": "pw-staff-123", "new_password1": "a-New-pass-4567",
                                             "new_password2": "a-New-pass-4567"})  # fmt: skip
    [entry] = AuditEntry.objects.filter(action="password_changed")
    assert (entry.actor, entry.target, entry.detail) == ("staff", "staff", {})


def test_rule_changes_are_recorded_from_the_admin_and_the_command_line(client, staff, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with acting_as("cli: policy (root)"):  # as manage.py sets it for every command
        call_command("policy", "import", str(path))
    client.force_login(staff)
    rule = Rule.objects.get(rule_id="deny-ssh")
    page = client.get(reverse("admin:policy_rule_change", args=[rule.pk]))
    form = {k: v for k, v in page.context["adminform"].form.initial.items() if v is not None}
    form |= {"dest_port": "2222", "tags": "", "description": "ssh, moved"}
    response = client.post(reverse("admin:policy_rule_change", args=[rule.pk]), form, REMOTE_ADDR="192.0.2.8")
    assert response.status_code == 302, response.content[:2000]
    client.post(reverse("admin:policy_rule_delete", args=[rule.pk]), {"post": "yes"})
    assert trail(logins=False) == [
        ("cli: policy import " + str(path), "rule_created", "deny-ssh"),
        ("cli: policy import " + str(path), "policy_imported", str(path)),
        ("staff", "rule_changed", "deny-ssh"),
        ("staff", "rule_deleted", "deny-ssh"),
    ]  # the admin's own log of rules is not repeated: the rule history covers every entry point
    changed = AuditEntry.objects.get(action="rule_changed")
    assert changed.address == "192.0.2.8" and set(changed.detail["fields"]) == {"match.dest_port", "description"}
    assert AuditEntry.objects.get(action="policy_imported").detail["result"].startswith("1 created")


def test_enrolment_rekeying_revocation_and_restoring_of_nodes_are_recorded(client, staff):
    with acting_as("cli: enrol (root)"):
        call_command("enrol", "edge-7")
    node = Node.objects.get(name="edge-7")
    client.force_login(staff)
    changelist = reverse("admin:fleet_node_changelist")
    client.post(changelist, {"action": "rotate_token", "_selected_action": [node.pk]})
    client.post(changelist, {"action": "revoke", "_selected_action": [node.pk]})
    Node.objects.filter(pk=node.pk).update(last_seen_at=timezone.now())  # heartbeats are not audited
    node.refresh_from_db()
    node.revoked = False
    with acting_as("staff", staff.pk):
        node.save()
        node.save(update_fields=["last_seen_at"])
    assert trail(logins=False) == [
        ("cli: enrol (root)", "node_enrolled", "edge-7"),
        ("staff", "node_token_issued", "edge-7"),
        ("staff", "node_revoked", "edge-7"),
        ("staff", "node_restored", "edge-7"),
    ]


def test_exports_and_admin_changes_of_users_are_recorded(client, staff, viewer):
    client.force_login(staff)
    assert client.get(reverse("export", args=["csv"]), {"kind": "violations", "container": "web-1"}).status_code == 200
    assert client.get(reverse("admin:policy_rule_export")).status_code == 200
    client.post(reverse("admin:auth_user_change", args=[viewer.pk]), {
        "username": "val", "is_active": "on", "groups": list(viewer.groups.values_list("pk", flat=True)),
        "date_joined_0": "2026-11-01", "date_joined_1": "10:00:00", "first_name": "Val",
    })  # fmt: skip
    exported = AuditEntry.objects.get(action="events_exported")
    assert exported.target == "violations" and exported.detail["filter"]["container"] == "web-1"
    assert AuditEntry.objects.get(action="policy_exported").detail == {"rules": 0}
    user_change = AuditEntry.objects.get(action="admin_changed")
    assert user_change.target == "user val" and "First name" in user_change.detail["change"]


def test_the_page_filters_pages_and_exports_for_those_allowed(client, staff, viewer):
    for i in range(130):
        AuditEntry.objects.create(actor=f"user{i % 3}", action="login_failed", target=f"user{i % 3}",
                                  address="192.0.2.1")  # fmt: skip
    AuditEntry.objects.create(actor="staff", action="node_revoked", target="edge-9", ts=timezone.now())
    client.force_login(viewer)
    assert client.get(reverse("audit")).status_code == 403  # viewers read events, not who did what
    assert client.get(reverse("audit-export", args=["csv"])).status_code == 403
    client.force_login(staff)
    first = client.get(reverse("audit"), {"action": "login_failed"})
    assert len(first.context["rows"]) == 100 and first.context["next"]
    second = client.get(reverse("audit") + "?" + first.context["next"])
    assert len(second.context["rows"]) == 30 and "next" not in second.context
    assert {e.pk for e in first.context["rows"]}.isdisjoint(e.pk for e in second.context["rows"])
    found = client.get(reverse("audit"), {"q": "edge-9"}).context["rows"]
    assert [(e.actor, e.action) for e in found] == [("staff", "node_revoked")]
    assert client.get(reverse("audit"), {"since": "yesterday"}).status_code == 400
    assert client.get(reverse("audit"), {"action": "rm -rf"}).status_code == 400
    body = b"".join(client.get(reverse("audit-export", args=["ndjson"]), {"actor": "user1"}).streaming_content)
    rows = [json.loads(line) for line in body.splitlines()]
    assert len(rows) == 43 and {r["actor"] for r in rows} == {"user1"}
    exported = AuditEntry.objects.get(action="audit_exported")
    assert exported.actor == "staff" and exported.detail == {"format": "ndjson", "filter": {"actor": "user1"}}


def test_entries_are_read_only_in_the_admin_even_for_superusers(client, staff):
    entry = AuditEntry.objects.create(actor="staff", action="login", target="staff")
    client.force_login(staff)
    assert client.get(reverse("admin:audit_auditentry_changelist")).status_code == 200
    assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]), {"post": "yes"})
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_entries_past_their_age_are_pruned_and_no_others(settings):
    now = timezone.now()
    settings.AUDIT_DAYS = 30
    old = AuditEntry.objects.create(actor="a", action="login", ts=now - dt.timedelta(days=31))
    kept = AuditEntry.objects.create(actor="a", action="login", ts=now - dt.timedelta(days=29))
    assert prune(now).audit == 1
    assert not AuditEntry.objects.filter(pk=old.pk).exists() and AuditEntry.objects.filter(pk=kept.pk).exists()
    settings.AUDIT_DAYS = 0
    assert prune(now + dt.timedelta(days=3650)).audit == 0
