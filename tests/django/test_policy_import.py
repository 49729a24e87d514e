"""YAML import is all-or-nothing; export then import gives back the same rules."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from dashboard.policy.models import PolicyState, Rule

GOOD = """\
version: '1.0'
rules:
  - id: rule-001
    description: Alert on connections to the suspicious host
    match: {dest_ip: 127.10.10.5/32}
    action: alert
  - id: rule-002
    description: Non-production containers must not reach the database port
    match: {container: edge-app-staging, dest_port: 3306}
    action: deny
"""

BROKEN = {
    "invalid YAML": ("rules: [\n  - id: a\n   bad indent", "invalid YAML"),
    "missing rules key": ("version: '1.0'\npolicies: []\n", "unknown top-level key"),
    "no rules at all": ("version: '1.0'\n", "missing 'rules' key"),
    "rules not a list": ("rules: {id: a}\n", "'rules' must be a list"),
    "bad CIDR": (GOOD + "  - {id: rule-003, match: {dest_ip: 127.0.0.300/32}, action: deny}\n", "rule-003"),
    "port out of range": (GOOD + "  - {id: rule-003, match: {dest_port: 70000}, action: deny}\n", "dest_port"),
    "unknown action": (GOOD + "  - {id: rule-003, match: {}, action: block}\n", "action"),
    "duplicate key turning deny into allow": (
        "rules:\n  - id: rule-009\n    match: {dest_port: 22}\n    action: deny\n    action: allow\n",
        "duplicate key 'action'",
    ),
    "duplicate rule id": (GOOD + "  - {id: rule-001, match: {}, action: deny}\n", "more than one rule"),
    "alias bomb": ("a: &a [x, x]\nb: &b [*a, *a]\nrules: [*b]\n", "not allowed"),
    "python tag": ("rules:\n  - !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    "explicit str tag": ("rules:\n  - {id: !!str a, match: {}, action: deny}\n", "tags are not allowed"),
    "explicit map tag": ("rules:\n  - !!map {id: a, match: {}, action: deny}\n", "tags are not allowed"),
    "unknown format version": ("version: '9'\nrules: []\n", "unsupported format version"),
    "not a mapping": ("- just\n- a list\n", "top level must be a mapping"),
    "binary garbage": ("\udcff\udcfe".encode("utf-8", "surrogateescape").decode("latin-1"), ""),
}


def import_file(tmp_path, text, *args):
    path = tmp_path / "policy.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    out = io.StringIO()
    call_command("policy", "import", str(path), *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_import_creates_rules_and_bumps_policy_version(tmp_path):
    out = import_file(tmp_path, GOOD)
    assert "2 created" in out
    assert list(Rule.objects.values_list("rule_id", "action")) == [("rule-001", "alert"), ("rule-002", "deny")]
    assert Rule.objects.get(rule_id="rule-002").dest_port == "3306"
    assert PolicyState.current() >= 1


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_file_changes_nothing_and_names_the_problem(tmp_path, kind):
    import_file(tmp_path, GOOD)
    before = [r.to_spec() for r in Rule.objects.all()]
    version = PolicyState.current()
    text, expected = BROKEN[kind]
    with pytest.raises(CommandError) as err:
        import_file(tmp_path, text, "--mode", "replace")
    message = str(err.value)
    assert str(tmp_path / "policy.yaml") in message and "nothing was imported" in message
    assert expected in message
    assert [r.to_spec() for r in Rule.objects.all()] == before
    assert PolicyState.current() == version


@pytest.mark.django_db
def test_bad_rule_late_in_file_rolls_back_earlier_ones(tmp_path):
    text = GOOD + "  - {id: rule-003, match: {dest_ip: nope}, action: deny}\n"
    with pytest.raises(CommandError) as err:
        import_file(tmp_path, text)
    assert "rule 'rule-003': match.dest_ip" in str(err.value)
    assert Rule.objects.count() == 0


@pytest.mark.django_db
def test_oversized_file_is_refused(tmp_path, settings):
    settings.POLICY_MAX_BYTES = 100
    with pytest.raises(CommandError, match="larger than the 100-byte limit"):
        import_file(tmp_path, GOOD)


@pytest.mark.django_db
def test_export_then_import_gives_back_the_same_rules(tmp_path):
    import_file(
        tmp_path,
        GOOD + "  - {id: r6, priority: 5, tags: [T1071], match: {dest_ip: 'fd00::/8', "
        "dest_port: 8000-8080, cgroup_path: '/kubepods*'}, action: alert, severity: low}\n",
    )
    exported = tmp_path / "out.yaml"
    call_command("policy", "export", str(exported), stderr=io.StringIO())
    before = [r.to_spec() for r in Rule.objects.all()]
    Rule.objects.all().delete()
    out = import_file(tmp_path, exported.read_text())
    assert "3 created" in out
    assert [r.to_spec() for r in Rule.objects.all()] == before
    assert "0 created, 0 updated, 3 unchanged" in import_file(tmp_path, exported.read_text())


@pytest.mark.django_db
def test_replace_mode_deletes_rules_not_in_file_and_dry_run_changes_nothing(tmp_path):
    import_file(tmp_path, GOOD)
    one = "rules:\n  - {id: rule-001, match: {dest_ip: 127.10.10.5/32}, action: deny}\n"
    assert "would be 0 created, 1 updated, 0 unchanged, 1 deleted" in import_file(
        tmp_path, one, "--mode", "replace", "--dry-run"
    )
    assert Rule.objects.count() == 2
    import_file(tmp_path, one, "--mode", "replace")
    assert list(Rule.objects.values_list("rule_id", "action")) == [("rule-001", "deny")]


@pytest.mark.django_db
def test_admin_import_page_reports_error_and_changes_nothing(client, staff):
    client.force_login(staff)
    bad = io.BytesIO(b"rules:\n  - {id: r1, match: {dest_port: 0}, action: deny}\n")
    bad.name = "bad.yaml"
    response = client.post("/admin/policy/rule/import/", {"file": bad, "mode": "merge"})
    assert response.status_code == 200
    assert b"Nothing was imported" in response.content and b"dest_port" in response.content
    assert Rule.objects.count() == 0
    good = io.BytesIO(GOOD.encode())
    good.name = "good.yaml"
    response = client.post("/admin/policy/rule/import/", {"file": good, "mode": "merge"})
    assert response.status_code == 302 and Rule.objects.count() == 2
    exported = client.get("/admin/policy/rule/export/")
    assert b"rule-002" in exported.content and exported["Content-Type"] == "application/yaml"


@pytest.mark.django_db
def test_the_seeds_default_policy_imports_verbatim(tmp_path):
    """Top-level `description`, a numeric `cgroup_id`: the seed's own file."""
    seed = (Path(__file__).parents[1] / "fixtures" / "default_policy.yaml").read_text()
    assert "2 created" in import_file(tmp_path, seed)
    rule = Rule.objects.get(rule_id="rule-002")
    assert (rule.cgroup_id, rule.dest_ip, rule.dest_port, rule.action) == (67890, "10.10.10.5/32", "443", "deny")
    with pytest.raises(CommandError, match="'description' must be a string"):
        import_file(tmp_path, seed.replace('"Default CrossEdge policy for edge containers"', "[1]"))


@pytest.mark.django_db
def test_admin_replace_import_needs_delete_and_export_needs_view(client, django_user_model, tmp_path):
    from django.contrib.auth.models import Permission

    import_file(tmp_path, GOOD)
    clerk = django_user_model.objects.create_user("clerk", "", "pw-clerk-12345", is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(codename__in=("add_rule", "change_rule")))
    client.force_login(clerk)
    one = io.BytesIO(b"rules:\n  - {id: rule-001, match: {}, action: deny}\n")
    one.name = "one.yaml"
    response = client.post("/admin/policy/rule/import/", {"file": one, "mode": "replace"})
    assert response.status_code == 200 and b"you may not delete rules" in response.content
    assert Rule.objects.count() == 2  # nothing deleted, nothing changed
    assert client.get("/admin/policy/rule/export/").status_code == 200  # change implies view
    bystander = django_user_model.objects.create_user("bystander", "", "pw-by-12345", is_staff=True)
    client.force_login(bystander)
    assert client.get("/admin/policy/rule/export/").status_code == 403  # staff alone does not read the policy


@pytest.mark.django_db
def test_an_import_with_a_deny_the_kernel_cannot_hold_changes_nothing_and_a_weaker_rule_warns(tmp_path, capsys):
    unholdable = GOOD + "  - {id: keys, match: {path: '/home/*/.ssh/*'}, action: deny}\n"
    with pytest.raises(CommandError, match=r"keys.*match.path.*a deny must hold in the kernel"):
        import_file(tmp_path, unholdable)
    with pytest.raises(CommandError, match="a deny must hold in the kernel"):
        import_file(tmp_path, unholdable, "--dry-run")
    assert not Rule.objects.exists()
    weaker = GOOD + ("  - {id: odd, match: {binary: '/b?n/*sh'}, action: alert}\n"
                     "  - {id: no-shm, match: {binary: '/dev/shm/*'}, action: deny}\n"
                     "  - {id: memfd, match: {fileless: true}, action: deny}\n")  # fmt: skip
    path = tmp_path / "weaker.yaml"
    path.write_text(weaker)
    err = io.StringIO()
    call_command("policy", "import", str(path), stdout=io.StringIO(), stderr=err)
    assert "warning: rule odd is judged by the agent" in err.getvalue() and "deny no-shm" in err.getvalue()
    assert Rule.objects.get(rule_id="memfd").to_spec()["match"] == {"fileless": True}
