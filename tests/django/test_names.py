"""Names in the dashboard: stored with each connection and violation, searched by name
(exact, *.suffix, none) in search, the API, exports and the live feed's filter, tested
by the draft tester, and rules by name through the admin and the policy file."""

import io
import json

import pytest
import yaml
from django.core.management import CommandError, call_command

from dashboard.events.filters import EventFilter, FilterError
from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, Violation
from dashboard.events.serializers import connection_row
from dashboard.policy.models import Rule

from .conftest import agent_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def named(node):
    result = ingest_batch(
        node,
        [
            agent_event(dest_ip="127.20.0.1", dest_name="api.corp.test", verdict="allow", rule_id=""),
            agent_event(dest_ip="127.20.0.2", dest_name="x.api.corp.test", verdict="allow", rule_id=""),
            agent_event(dest_ip="127.20.0.3", dest_name="", verdict="alert", rule_id="unresolved"),
            agent_event(dest_ip="127.20.0.4", dest_name="blocked.test", verdict="deny", rule_id="deny-blocked"),
            agent_event(dest_ip="127.20.0.5"),  # an older agent: the name is not known
        ],
    )
    assert not result.rejected
    return result


def test_names_are_stored_with_connections_and_violations(named):
    names = dict(ConnectionEvent.objects.values_list("dest_ip", "dest_name"))
    assert names == {"127.20.0.1": "api.corp.test", "127.20.0.2": "x.api.corp.test", "127.20.0.3": "",
                     "127.20.0.4": "blocked.test", "127.20.0.5": None}  # fmt: skip
    denied = Violation.objects.get(rule_id="deny-blocked")
    assert denied.dest_name == "blocked.test" and denied.target == "127.20.0.4:443 (blocked.test)"
    assert connection_row(ConnectionEvent.objects.get(dest_ip="127.20.0.1"))["dest_name"] == "api.corp.test"


def test_a_bad_name_is_refused_with_the_rest_of_the_batch_stored(node):
    result = ingest_batch(node, [agent_event(dest_name="x" * 300), agent_event(dest_name=7), agent_event()])
    assert len(result.rejected) == 2 and "dest_name" in result.rejected[0]["reason"]
    assert ConnectionEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "ips"),
    [
        ("api.corp.test", {"127.20.0.1"}),
        ("*.corp.test", {"127.20.0.1", "127.20.0.2"}),
        ("*.api.corp.test", {"127.20.0.2"}),
        ("none", {"127.20.0.3"}),
    ],
)
def test_search_api_export_and_feed_filter_by_name(client, staff, named, name, ips):
    client.force_login(staff)
    qs = EventFilter.parse({"name": name}).apply(ConnectionEvent.objects.all(), "verdict")
    assert set(qs.values_list("dest_ip", flat=True)) == ips
    rows = client.get("/api/connections/", {"name": name}).json()["results"]
    assert {r["dest_ip"] for r in rows} == ips
    exported = client.get("/events/export.ndjson", {"name": name})
    lines = [json.loads(line) for line in b"".join(exported.streaming_content).splitlines()]
    assert {r["dest_ip"] for r in lines} == ips and all("dest_name" in r for r in lines)
    page = client.get("/events/", {"name": name}).content.decode()
    assert all(ip in page for ip in ips)
    feed_filter = EventFilter.parse({"name": name})
    matched = {r["dest_ip"] for r in map(connection_row, ConnectionEvent.objects.all()) if feed_filter.matches(r)}
    assert matched == ips


def test_a_bad_name_filter_says_why():
    with pytest.raises(FilterError, match="name"):
        EventFilter.parse({"name": "a.*.test"})


def test_the_draft_tester_replays_a_rule_by_name(client, staff, named):
    client.force_login(staff)
    page = client.get("/rule-test/", {"dest_fqdn": "*.corp.test"}).content.decode()
    assert 'id="draft-total">2<' in page
    page = client.get("/rule-test/", {"dest_fqdn": "none"}).content.decode()
    assert 'id="draft-total">1<' in page
    page = client.get("/rule-test/", {"dest_fqdn": "a.*.b"}).content.decode()
    assert "dest_fqdn" in page and "wildcard" in page


def rule_form(**fields) -> dict:
    base = {"action": "deny", "mode": "enforce", "severity": "high", "priority": 10, "tags": "[]", "access": "[]"}
    return base | fields


def test_rules_by_name_through_the_admin(admin_client):
    form = rule_form(rule_id="deny-evil", dest_fqdn="*.Evil.test.", dest_port="443")
    response = admin_client.post("/admin/policy/rule/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = Rule.objects.get(rule_id="deny-evil")
    assert rule.dest_fqdn == "*.evil.test" and rule.to_spec()["match"] == {"dest_fqdn": "*.evil.test", "dest_port": 443}
    bad = admin_client.post(
        "/admin/policy/rule/add/", rule_form(rule_id="both", dest_fqdn="a.test", dest_ip="127.0.0.1/32")
    )
    assert bad.status_code == 200 and "by address or by name" in bad.content.decode()
    assert not Rule.objects.filter(rule_id="both").exists()


def test_rules_by_name_through_the_policy_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "rules:\n"
        "  - {id: api, match: {dest_fqdn: API.example.com, dest_port: 443}, action: allow}\n"
        "  - {id: paste, match: {dest_fqdn: '*.paste.example'}, action: deny}\n"
        "  - {id: unresolved, match: {container: 'web-*', dest_fqdn: none}, action: alert}\n"
    )
    call_command("policy", "import", str(good), stdout=io.StringIO())
    exported = tmp_path / "out.yaml"
    call_command("policy", "export", str(exported), stderr=io.StringIO())
    rules = {r["id"]: r["match"] for r in yaml.safe_load(exported.read_text())["rules"]}
    assert rules == {"api": {"dest_fqdn": "api.example.com", "dest_port": 443},
                     "paste": {"dest_fqdn": "*.paste.example"},
                     "unresolved": {"container": "web-*", "dest_fqdn": "none"}}  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: new, match: {dest_fqdn: 'a.*.example'}, action: deny}\n")
    with pytest.raises(CommandError, match="dest_fqdn"):
        call_command("policy", "import", str(bad), stdout=io.StringIO())
    assert set(Rule.objects.values_list("rule_id", flat=True)) == {"api", "paste", "unresolved"}


def test_the_nodes_page_says_what_the_dns_program_read_and_lost(client, staff, node):
    node.health = {"kernel": {"policy_version": 1, "packet_sockets": "no rule names them",
                              "unix_sockets": "unix socket programs not loaded (a kernel before 6.7?)"},
                   "dns": {"kernel_answers": 5, "names": 3, "kernel_lost": 1,
                                                             "answers": 4, "odd": "x", "kernel_unmatched": 2,
                                                             "kernel_forged": 7}}  # fmt: skip
    node.save()
    assert node.dns == {"kernel_answers": 5, "names": 3, "kernel_lost": 1, "answers": 4, "kernel_unmatched": 2,
                        "kernel_forged": 7}  # fmt: skip
    client.force_login(staff)
    page = " ".join(client.get("/nodes/").content.decode().split())
    assert "DNS: 5 answers read in the kernel, 3 names learned" in page
    assert "1 not passed to the agent (counted)" in page
    assert "2 answering no query taught nothing" in page and "7 forged dropped" in page
    assert "packet sockets: no rule names them; unix sockets: unix socket programs not loaded" in page


def dns_report(seq, **overrides):
    event = agent_event(seq=seq)
    return {k: event[k] for k in ("seq", "ts_ns", "cgroup_id", "cgroup_path", "container", "policy_version")} | {
        "kind": "dns", "rule_id": "dns-unsolicited", "verdict": "alert", "severity": "high", "enforced": False,
        "audit": False, "reason": "unsolicited", "peer": "127.53.53.53", "family": 4, "name": "ok.test",
        "count": 1, "window_s": 0,
    } | overrides  # fmt: skip


def test_answers_the_kernel_learned_nothing_from_are_violations_and_bad_reports_are_refused(node, client, staff):
    forged = {"rule_id": "dns-forged", "verdict": "deny", "reason": "forged", "enforced": True, "peer": "127.0.0.11"}
    result = ingest_batch(node, [
        dns_report(1),
        dns_report(2, **forged, count=40, window_s=10),
        dns_report(3, reason="untrusted", peer="::1\nX", family=6),  # no address
        dns_report(4, reason="forged"),  # a forged response is dropped: a deny, not an alert
        dns_report(5, reason="whatever"),
        dns_report(6, name="x" * 300),
        dns_report(7, reason="untrusted", rule_id="dns-untrusted", peer="fd00::53", family=6, name=""),
    ])  # fmt: skip
    assert [r["seq"] for r in result.rejected] == [3, 4, 5, 6]
    first, many, untrusted = Violation.objects.filter(kind="dns").order_by("seq")
    assert first.target == "DNS answer from 127.53.53.53:53 that answers no query the container sent naming ok.test: " \
                           "taught nothing"  # fmt: skip
    assert (first.action, first.enforced, first.dest_name, first.container.name) == ("alert", False, "ok.test",
                                                                                      "edge-app-prod")  # fmt: skip
    assert many.target == "DNS response sent as the trusted resolver 127.0.0.11:53 naming ok.test: dropped (40 in 10 s)"
    assert (many.action, many.enforced, many.count) == ("deny", True, 40)
    assert untrusted.target == "DNS answer from [fd00::53]:53, a resolver this node does not trust: taught nothing"
    client.force_login(staff)
    page = client.get("/events/", {"kind": "violations", "event": "dns"})
    assert page.status_code == 200 and "a resolver this node does not trust" in page.content.decode()
