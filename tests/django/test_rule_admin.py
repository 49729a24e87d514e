"""Rules edited in the admin are validated by the engine's own schema."""

import pytest

from dashboard.policy.models import PolicyState, Rule

FORM = {
    "rule_id": "rule-010",
    "description": "",
    "action": "deny",
    "mode": "enforce",
    "severity": "medium",
    "priority": 100,
    "tags": "[]",
    "container": "",
    "cgroup_path": "",
    "cgroup_id": "",
    "dest_ip": "",
    "dest_port": "",
}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, field, text",
    [
        ({"dest_ip": "127.0.0.300/32"}, "dest_ip", "not a valid CIDR"),
        ({"dest_port": "70000"}, "dest_port", "between 1 and 65535"),
        ({"dest_port": "http"}, "dest_port", "port number or a range"),
        ({"action": "block"}, "action", "block"),
        ({"tags": '{"a": 1}'}, "tags", "list"),
    ],
)
def test_invalid_rule_is_a_form_error(client, staff, change, field, text):
    client.force_login(staff)
    response = client.post("/admin/policy/rule/add/", {**FORM, **change})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and text in " ".join(errors[field])
    assert not Rule.objects.exists()


@pytest.mark.django_db
def test_valid_rule_saves_normalised_and_bumps_version(client, staff):
    client.force_login(staff)
    version = PolicyState.current()
    response = client.post("/admin/policy/rule/add/", {**FORM, "dest_ip": "127.10.10.5", "dest_port": "8000 - 8080"})
    assert response.status_code == 302
    rule = Rule.objects.get()
    assert (rule.dest_ip, rule.dest_port) == ("127.10.10.5/32", "8000-8080")
    assert PolicyState.current() == version + 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, field",
    [({"binary": "/usr/bin/[bd]ash"}, "binary"), ({"path": "/home/*/.ssh/*"}, "path"),
     ({"binary": "/usr/bin/*", "parent": "*/p?thon*"}, "parent")],
)  # fmt: skip
def test_a_deny_the_kernel_cannot_hold_is_refused_with_how_to_write_it(client, staff, change, field):
    client.force_login(staff)
    response = client.post("/admin/policy/rule/add/", {**FORM, **change})
    errors = response.context["adminform"].form.errors
    assert "a deny must hold in the kernel" in " ".join(errors[field]) and "/dev/shm/*" in " ".join(errors[field])
    assert not Rule.objects.exists()
    response = client.post("/admin/policy/rule/add/", {**FORM, **change, "action": "alert"})
    assert response.status_code == 302  # the agent judges an alert after the fact: accepted


@pytest.mark.django_db
def test_an_agent_rule_above_a_kernel_deny_is_saved_with_a_warning_naming_the_deny(client, staff):
    client.force_login(staff)
    Rule.objects.create(rule_id="no-shm", action="deny", binary="/dev/shm/*", priority=200)
    response = client.post("/admin/policy/rule/add/", {**FORM, "action": "alert", "binary": "/u?r/*sh"}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert any("judged by the agent" in m and "deny no-shm" in m for m in shown), shown
    above = {**FORM, "rule_id": "r2", "binary": "/tmp/*", "priority": 50}  # a deny above it: nothing weakens it
    response = client.post("/admin/policy/rule/add/", above, follow=True)
    assert not [str(m) for m in response.context["messages"] if "judged by the agent" in str(m)]
    response = client.post("/admin/policy/rule/add/", {**FORM, "rule_id": "r3", "action": "deny", "fileless": "on"})
    assert response.status_code == 302 and Rule.objects.get(rule_id="r3").to_spec()["match"] == {"fileless": True}


@pytest.mark.django_db
def test_a_socket_rule_through_the_admin_and_the_policy_file(client, staff, tmp_path):
    import io

    import yaml
    from django.core.management import CommandError, call_command

    client.force_login(staff)
    form = {**FORM, "access": "[]", "container": "web-*", "socket": '["packet", "raw"]'}
    assert client.post("/admin/policy/rule/add/", form).status_code == 302
    rule = Rule.objects.get()
    assert rule.socket == ["raw", "packet"] and rule.what == "raw, packet sockets made"
    bad = client.post("/admin/policy/rule/add/", {**form, "rule_id": "bad", "socket": '["tcp"]'})
    assert bad.status_code == 200 and "must be one of raw, packet, icmp, sctp" in bad.content.decode()
    mixed = client.post("/admin/policy/rule/add/", {**form, "rule_id": "mixed", "dest_port": "53"})
    assert mixed.status_code == 200 and "names only the kind of socket and containers" in mixed.content.decode()
    out = tmp_path / "out.yaml"
    call_command("policy", "export", str(out), stderr=io.StringIO())
    (spec,) = yaml.safe_load(out.read_text())["rules"]
    assert spec["match"] == {"container": "web-*", "socket": ["raw", "packet"]}
    out.write_text(yaml.safe_dump({"rules": [spec | {"id": "from-file", "match": {"socket": "icmp"}}]}))
    call_command("policy", "import", str(out), stdout=io.StringIO())
    assert Rule.objects.get(rule_id="from-file").socket == ["icmp"]
    out.write_text(yaml.safe_dump({"rules": [spec | {"id": "broken", "match": {"socket": {"raw": 1}}}]}))
    with pytest.raises(CommandError, match="match.socket"):
        call_command("policy", "import", str(out), stdout=io.StringIO())
    assert set(Rule.objects.values_list("rule_id", flat=True)) == {"rule-010", "from-file"}
