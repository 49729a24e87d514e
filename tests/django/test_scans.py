"""Scans in the dashboard: the call that reached a scan rule is one scan violation, a scan's
summed calls are connection rows with a port range (counted, raising no violation each),
bad scan fields are refused with the batch kept, and scan rules go through the admin and
the policy file."""

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, Violation
from dashboard.events.serializers import connection_row
from dashboard.policy.models import Rule

from .conftest import agent_event, flood

pytestmark = pytest.mark.django_db


def test_a_scan_is_one_violation_and_its_sums_are_counted_rows(node, client, admin_user):
    result = ingest_batch(
        node,
        [
            agent_event(
                dest_ip="127.77.0.1",
                dest_port=20149,
                verdict="deny",
                rule_id="scan-guard",
                result=-1,
                enforced=True,
                scan=150,
            ),  # fmt: skip
            agent_event(
                dest_ip="127.77.0.1",
                dest_port=20200,
                dest_port_hi=22999,
                count=2500,
                verdict="deny",
                rule_id="scan-guard",
                result=-1,
                enforced=True,
            ),  # fmt: skip
            agent_event(
                dest_ip="127.77.0.1",
                dest_port=20150,
                dest_port_hi=20199,
                count=50,
                verdict="allow",
                rule_id="",
                result=None,
            ),  # fmt: skip
        ],
    )
    assert not result.rejected
    (violation,) = Violation.objects.all()
    assert (violation.kind, violation.rule_id, violation.count, violation.enforced) == ("scan", "scan-guard", 1, True)
    assert violation.target == "150 new destinations within 1 s (reaching 127.77.0.1:20149)"
    summed = ConnectionEvent.objects.filter(dest_port_hi__isnull=False).order_by("dest_port")
    assert [(r.ports, r.count) for r in summed] == [("20150-20199", 50), ("20200-22999", 2500)]
    assert connection_row(summed[1])["dest_port_hi"] == 22999
    client.force_login(admin_user)
    page = client.get("/events/", {"kind": "connections"}).content.decode()
    assert "127.77.0.1:20200–22999 · scan, new destinations" in page and "×2500" in page
    page = client.get("/events/", {"kind": "violations", "event": "scan"}).content.decode()
    assert "150 new destinations within 1 s" in page


def test_bad_scan_fields_are_refused_and_the_rest_stored(node):
    result = ingest_batch(
        node,
        [
            agent_event(dest_port=500, dest_port_hi=499),
            agent_event(dest_port_hi=70000),
            agent_event(scan=0),
            agent_event(scan=True),
            agent_event(scan=5, verdict="allow", rule_id=""),
            agent_event(held=True, verdict="alert"),
            agent_event(),
        ],
    )
    reasons = [r["reason"] for r in result.rejected]
    assert len(reasons) == 6 and ConnectionEvent.objects.count() == 1 and "held" in reasons[5]
    assert "dest_port_hi" in reasons[0] and "scan" in reasons[2] and "alerts or denies" in reasons[4]


def test_a_scan_rule_through_the_admin(admin_client):
    form = {"rule_id": "scan-guard", "action": "deny", "mode": "enforce", "severity": "high", "priority": 5,
            "tags": "[]", "access": "[]", "container": "web-*", "new_destinations": 100, "hold": 30}  # fmt: skip
    response = admin_client.post("/admin/policy/rule/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = Rule.objects.get(rule_id="scan-guard")
    assert rule.to_spec()["limit"] == {"new_destinations": 100} and rule.to_spec()["hold"] == 30
    assert rule.what == "scan: 100 new destinations in 1 s, refused for 30 s"
    bad = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "bad", "dest_port": "22"})
    assert bad.status_code == 200 and "names only containers" in bad.content.decode()
    bad = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "bad", "action": "alert"})
    assert bad.status_code == 200 and "deny rules only" in bad.content.decode()
    defaulted = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "scan-2", "hold": ""})
    assert defaulted.status_code == 302 and Rule.objects.get(rule_id="scan-2").hold == 60


def test_scan_rules_through_the_policy_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {id: scan, match: {container: 'web-*'}, limit: {new_destinations: 100}, "
                    "action: alert}\n")  # fmt: skip
    call_command("policy", "import", str(path), stdout=io.StringIO())
    out = tmp_path / "out.yaml"
    call_command("policy", "export", str(out), stderr=io.StringIO())
    (spec,) = yaml.safe_load(out.read_text())["rules"]
    assert (spec["limit"], spec["match"], "hold" in spec) == ({"new_destinations": 100}, {"container": "web-*"}, False)
    path.write_text("rules:\n  - {id: other, match: {}, limit: {new_destinations: -1}, action: deny}\n")
    with pytest.raises(CommandError, match="new_destinations"):
        call_command("policy", "import", str(path), stdout=io.StringIO())
    assert list(Rule.objects.values_list("rule_id", flat=True)) == ["scan"]


def test_a_flood_is_one_violation_stored_once_and_bad_reports_are_refused(node, client, admin_user):
    result = ingest_batch(node, [flood(1), flood(2, source_ip="::1", family=4), flood(3, verdict="allow"),
                                 flood(4, hold=0), agent_event(seq=5)])  # fmt: skip
    assert [r["seq"] for r in result.rejected] == [2, 3, 4] and result.stored == 2
    assert ingest_batch(node, [flood(1)]).duplicates == 1  # resent after a reconnect: stored once
    (v,) = Violation.objects.filter(kind="flood")
    assert (v.rule_id, v.action, v.enforced, v.seq, v.container) == ("syn-flood", "deny", True, 1, None)
    assert v.target == "198.18.0.1 sent 1000 TCP SYNs within 1 s (to port 443); dropped at XDP for 300 s"
    client.force_login(admin_user)
    page = client.get("/events/", {"kind": "violations", "event": "flood"}).content.decode()
    assert "198.18.0.1 sent 1000 TCP SYNs" in page


def test_a_flood_rule_through_the_admin_and_the_policy_file(admin_client, tmp_path):
    form = {"rule_id": "syn-flood", "action": "deny", "mode": "enforce", "severity": "high", "priority": 5,
            "tags": "[]", "access": "[]", "syn_per_source": 1000, "hold": 300}  # fmt: skip
    assert admin_client.post("/admin/policy/rule/add/", form).status_code == 302
    rule = Rule.objects.get(rule_id="syn-flood")
    assert rule.to_spec()["limit"] == {"syn_per_source": 1000} and rule.to_spec()["match"] == {}
    assert rule.what == "SYN flood: 1000 SYNs in 1 s from one source, dropped for 300 s"
    bad = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "bad", "container": "web"})
    assert bad.status_code == 200 and "its match is {}" in bad.content.decode()
    both = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "both", "new_destinations": 100})
    assert both.status_code == 200 and "must be a mapping with one of" in both.content.decode()
    out = tmp_path / "out.yaml"
    call_command("policy", "export", str(out), stderr=io.StringIO())
    (spec,) = yaml.safe_load(out.read_text())["rules"]
    assert (spec["limit"], spec["hold"], spec["match"]) == ({"syn_per_source": 1000}, 300, {})


def limit_report(seq, **overrides):
    event = agent_event(seq=seq)
    return {k: event[k] for k in ("seq", "ts_ns", "cgroup_id", "cgroup_path", "container", "policy_version")} | {
        "kind": "limit", "rule_id": "egress-1mb", "verdict": "deny", "severity": "low", "enforced": True,
        "audit": False, "what": "egress", "rate": 1_000_000, "held_bytes": 2_500_000, "held_packets": 1_800,
        "refused": 0, "window_s": 60,
    } | overrides  # fmt: skip


def test_a_limit_report_is_one_violation_on_its_container(node):
    result = ingest_batch(node, [limit_report(1), limit_report(2, what="connections", refused=0, held_bytes=0),
                                 limit_report(3, what="connections", rate=50, refused=1234, held_bytes=0,
                                              held_packets=0, audit=True, enforced=False)])  # fmt: skip
    assert [r["seq"] for r in result.rejected] == [2]
    egress, conns = Violation.objects.filter(kind="limit").order_by("seq")
    assert egress.target == "egress held to 1,000,000 B/s: 2,500,000 bytes (1,800 packets) held back in 60 s"
    assert egress.container.name == "edge-app-prod" and egress.enforced
    assert conns.target == "connections held to 50/s: 1,234 calls refused (would have been) in 60 s"
    assert conns.count == 1234 and conns.audit


def test_a_rate_limit_through_the_admin(admin_client):
    form = {"rule_id": "egress-1mb", "action": "deny", "mode": "enforce", "severity": "low", "priority": 5,
            "tags": "[]", "access": "[]", "container": "web-*", "egress_bytes_per_s": 1_000_000}  # fmt: skip
    assert admin_client.post("/admin/policy/rule/add/", form).status_code == 302
    rule = Rule.objects.get(rule_id="egress-1mb")
    assert rule.to_spec()["limit"] == {"egress_bytes_per_s": 1_000_000} and rule.what == "limit: egress 1,000,000 B/s"
    bad = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "bad", "action": "alert"})
    assert bad.status_code == 200 and "holds the container to it" in bad.content.decode()
