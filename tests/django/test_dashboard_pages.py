"""The pages staff work in: search and export, grouped violations, the rule page with its
history and promotion, the draft tester, the container page, roles, and deploy checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent
from dashboard.events.periods import rule_hits
from dashboard.fleet.models import Container
from dashboard.policy.models import Rule, RuleChange

from .conftest import agent_event

STAGING = {"runtime": "docker", "id": "cd" * 32, "name": "edge-app-staging", "pod_uid": ""}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stored(node):
    batch = [agent_event(i, verdict="alert", rule_id="rule-001") for i in range(1, 6)]
    batch[0]["count"] = 40  # 40 alerts folded in the kernel into one row
    batch += [
        agent_event(i, container=STAGING, cgroup_path="/docker/" + "cd" * 32, verdict="deny", rule_id="rule-002",
                    dest_ip="127.0.0.2", dest_port=3306, comm="=HYPERLINK(1)")
        for i in range(6, 9)
    ]  # fmt: skip
    batch.append(agent_event(9, verdict="allow", rule_id="", severity="", dest_ip="127.8.8.8", dest_port=80))
    ingest_batch(node, batch)


@pytest.mark.django_db
def test_search_filters_and_pages_with_a_cursor(client, viewer, stored, monkeypatch):
    client.force_login(viewer)
    page = client.get("/events/?container=edge-app-staging")
    assert page.status_code == 200 and len(page.context["rows"]) == 3
    seen, url = [], "/events/?kind=connections"
    monkeypatch.setattr("dashboard.events.search.PAGE", 4)
    while url:
        resp = client.get(url)
        seen += [r["id"] for r in resp.context["rows"]]
        url = f"/events/?{resp.context['next']}" if resp.context["next"] else None
    assert len(seen) == len(set(seen)) == 9
    assert client.get("/events/?port=99999").status_code == 400
    assert client.get("/events/?kind=violations&rule=rule-002").context["rows"][0]["rule_id"] == "rule-002"


@pytest.mark.django_db
def test_exports_stream_every_match_and_defuse_formulas(client, viewer, stored):
    client.force_login(viewer)
    csv_text = b"".join(client.get("/events/export.csv?container=edge-app-staging").streaming_content).decode()
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,") and len(lines) == 4
    assert "'=HYPERLINK(1)" in csv_text and ",=HYPERLINK" not in csv_text
    nd = b"".join(client.get("/events/export.ndjson?kind=violations").streaming_content).decode()
    rows = [json.loads(line) for line in nd.splitlines()]
    assert len(rows) == 8 and {r["rule_id"] for r in rows} == {"rule-001", "rule-002"}
    assert client.get("/events/export.xlsx").status_code == 404


@pytest.mark.django_db
def test_grouped_violations_count_repeats(client, viewer, stored):
    client.force_login(viewer)
    groups = client.get("/violations/grouped/").context["groups"]
    by_rule = {g["rule_id"]: g for g in groups}
    assert by_rule["rule-001"]["n"] == 44 and by_rule["rule-002"]["n"] == 3  # calls, not rows
    assert len(by_rule["rule-002"]["samples"]) == 3 and by_rule["rule-002"]["first"] <= by_rule["rule-002"]["last"]


@pytest.mark.django_db
def test_rule_history_records_who_changed_what(client, editor):
    client.force_login(editor)
    form = {"rule_id": "db-guard", "description": "", "action": "alert", "mode": "enforce", "severity": "high",
            "priority": 100, "tags": "[]", "container": "", "cgroup_path": "", "cgroup_id": "",
            "dest_ip": "", "dest_port": "3306"}  # fmt: skip
    assert client.post("/admin/policy/rule/add/", form).status_code == 302
    pk = Rule.objects.get(rule_id="db-guard").pk
    assert client.post(f"/admin/policy/rule/{pk}/change/", form | {"action": "deny"}).status_code == 302
    changes = list(RuleChange.objects.filter(rule_id="db-guard").order_by("ts"))
    assert [(c.action, c.actor) for c in changes] == [("created", "eddie"), ("changed", "eddie")]
    assert changes[1].changed_fields() == [("action", "alert", "deny")]
    page = client.get("/rules/db-guard/").content.decode()
    assert "action: <del>alert</del> → <ins>deny</ins>" in page


@pytest.mark.django_db
def test_promotion_from_audit_shows_the_would_deny_count_and_needs_an_editor(client, editor, viewer, node):
    Rule.objects.create(rule_id="trial", action="deny", mode="audit", dest_port="3306")
    ingest_batch(node, [agent_event(i, verdict="deny", rule_id="trial", audit=True, count=i * 5) for i in (1, 2)])
    client.force_login(viewer)
    page = client.get("/rules/trial/")
    assert 'id="would-deny">15<' in page.content.decode()  # 5 + 10 would-be denies, in two rows
    assert sum(hour.get("deny", 0) for _, hour in rule_hits("trial", "24h", timezone.now())) == 15
    assert client.post("/rules/trial/promote/").status_code == 403
    client.force_login(editor)
    assert client.post("/rules/trial/promote/").status_code == 302
    assert Rule.objects.get(rule_id="trial").mode == "enforce"
    assert RuleChange.objects.filter(rule_id="trial", action="changed", actor="eddie").exists()


@pytest.mark.django_db
def test_a_draft_rule_is_replayed_over_the_last_day(client, viewer, stored):
    client.force_login(viewer)
    result = client.get("/rule-test/?dest_port=3306").context["result"]
    assert result == {"total": 3, "containers": [("edge-app-staging", 3)], "what": "connection"}
    result = client.get("/rule-test/?dest_ip=127.0.0.0/8&container=edge-app-*").context["result"]
    assert result["total"] == 48  # calls: one of the rows stands for 40
    assert "not a valid CIDR" in client.get("/rule-test/?dest_ip=127.0.0.300/32").context["error"]
    assert ConnectionEvent.objects.count() == 9  # nothing was written


@pytest.mark.django_db
def test_container_page_lists_the_rules_that_apply(client, viewer, stored):
    Rule.objects.create(rule_id="staging-only", action="deny", container="edge-app-staging")
    Rule.objects.create(rule_id="prod-only", action="deny", container="edge-app-prod")
    Rule.objects.create(rule_id="everyone", action="alert", dest_port="22")
    client.force_login(viewer)
    staging = Container.objects.get(name="edge-app-staging")
    page = client.get(f"/containers/{staging.pk}/")
    assert [r.rule_id for r in page.context["rules"]] == ["staging-only", "everyone"]
    assert len(page.context["violations"]) == 3


@pytest.mark.django_db
def test_viewers_read_but_cannot_edit_rules(client, viewer):
    rule = Rule.objects.create(rule_id="r", action="alert")
    client.force_login(viewer)
    for url in ("/", "/rules/", "/rules/r/", "/events/", "/violations/grouped/", "/nodes/"):
        assert client.get(url).status_code == 200, url
    edit = client.get(f"/admin/policy/rule/{rule.pk}/change/")
    assert edit.status_code == 302 and "/admin/login/" in edit["Location"]
    assert client.get("/accounts/password_change/").status_code == 200


@pytest.mark.django_db
def test_an_unknown_rule_page_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get("/rules/nope/").status_code == 404


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = {
        **os.environ,
        "CROSSEDGE_VAR_DIR": str(tmp_path),
        "CROSSEDGE_DEBUG": "0",
        "CROSSEDGE_SECRET_KEY": "k" * 20 + "Xq9!vL2#pR7$wT4%yU8^zA1&bC5*dE3(fG6)hJ0",
        "CROSSEDGE_ALLOWED_HOSTS": "dashboard.example.org",
        "CROSSEDGE_SECURE_COOKIES": "1",
        "CROSSEDGE_HTTPS": "1",
        "CROSSEDGE_HSTS_PRELOAD": "1",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
