"""Ingress rules in the dashboard: the admin form and the policy file, and the Nodes page
saying where each node's blocklist runs (native or generic XDP) or why not."""

import datetime as dt
import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from dashboard.policy.models import Rule

pytestmark = pytest.mark.django_db


def test_an_ingress_rule_through_the_admin(admin_client):
    form = {"rule_id": "block-scanner", "action": "deny", "mode": "enforce", "severity": "high", "priority": 5,
            "tags": "[]", "access": "[]", "source_ip": "198.18.7.0/24", "expires_0": "2026-12-01",
            "expires_1": "00:00:00"}  # fmt: skip
    response = admin_client.post("/admin/policy/rule/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = Rule.objects.get(rule_id="block-scanner")
    assert rule.to_spec()["match"] == {"source_ip": "198.18.7.0/24"} and rule.expires.year == 2026
    assert rule.what == "packets from 198.18.7.0/24 until 2026-12-01 00:00 UTC"
    bad = admin_client.post("/admin/policy/rule/add/", form | {"rule_id": "bad", "container": "web"})
    assert bad.status_code == 200 and "names only the source" in bad.content.decode()


def test_ingress_rules_through_the_policy_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {id: block, match: {source_ip: 198.18.0.0/15}, action: deny, "
                    "expires: 2026-12-01T00:00:00Z}\n")  # fmt: skip
    call_command("policy", "import", str(path), stdout=io.StringIO())
    out = tmp_path / "out.yaml"
    call_command("policy", "export", str(out), stderr=io.StringIO())
    (spec,) = yaml.safe_load(out.read_text())["rules"]
    assert spec["match"] == {"source_ip": "198.18.0.0/15"}
    expires = dt.datetime.fromisoformat(str(spec["expires"]).replace("Z", "+00:00"))
    assert expires == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    path.write_text("rules:\n  - {id: other, match: {source_ip: 198.18.0.0/15}, action: deny, expires: soon}\n")
    with pytest.raises(CommandError, match="expires"):
        call_command("policy", "import", str(path), stdout=io.StringIO())
    assert list(Rule.objects.values_list("rule_id", flat=True)) == ["block"]


def test_the_nodes_page_says_where_the_blocklist_runs(client, staff, node):
    node.health = {"kernel": {"policy_version": 1, "xdp": {"eth0": "native", "ns/veth1": "not attached: busy"}}}
    node.save()
    client.force_login(staff)
    page = " ".join(client.get("/nodes/").content.decode().split())
    assert "ingress blocklist on eth0: native XDP" in page
    assert "ingress blocklist on ns/veth1: not attached: busy" in page
