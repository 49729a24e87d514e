"""File opens from an agent: stored with path, access and result in the process table,
a flagged one as a violation naming the file; a malformed one refused by field; the
container page, the process page, the feed filter, search and export show them."""

import io
import os

import pytest
from django.core.management import CommandError, call_command

from dashboard.events.filters import EventFilter
from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ProcessEvent, Violation
from dashboard.events.process_tree import process_tree
from dashboard.events.serializers import process_row
from dashboard.fleet.models import Container
from dashboard.policy.distribution import current_policy
from dashboard.policy.models import Rule
from monitor.rules import RuleSet

from .test_process_events import proc_event

pytestmark = pytest.mark.django_db


def open_event(seq, opened, access=("read",), result=3, **overrides):
    event = proc_event(seq, kind="open", binary="/bin/cat", args=[], path=opened, access=list(access), result=result)
    event.update(overrides)
    return event


def test_opens_are_stored_and_a_killed_open_is_a_violation_naming_the_file(node, client, staff):
    batch = [
        proc_event(1, pid=20, start_ns=20, binary="/bin/cat"),
        open_event(2, "/etc/shadow", pid=20, start_ns=20, result=-13),
        open_event(3, "/etc/hosts", ("write", "create", "truncate"), pid=20, start_ns=20, count=4),
        open_event(
            4, "/etc/sudoers", pid=20, start_ns=20, verdict="deny", rule_id="no-sudoers", severity="high", enforced=True
        ),  # fmt: skip
    ]
    result = ingest_batch(node, batch)
    assert result.stored == 4 and not result.rejected
    shadow = ProcessEvent.objects.get(seq=2)
    assert (shadow.kind, shadow.path, shadow.access, shadow.result, shadow.result_text) == (
        "open", "/etc/shadow", "read", -13, "EACCES"
    )  # fmt: skip
    assert ProcessEvent.objects.get(seq=3).access == "write,create,truncate"
    v = Violation.objects.get()
    assert (v.kind, v.target, v.enforced, v.process.seq, v.rule_id) == (
        "open",
        "/etc/sudoers (read)",
        True,
        4,
        "no-sudoers",
    )
    container = Container.objects.get()
    tree = process_tree(container)
    assert [p.binaries for _, roots in tree for p in roots] == [["/bin/cat"]]  # opens are no processes of their own
    client.force_login(staff)
    page = client.get(f"/containers/{container.pk}/").content.decode()
    assert "Recent file accesses" in page and "/etc/shadow" in page and "EACCES" in page and "×4" in page
    proc = client.get(f"/processes/{v.process_id}/").content.decode()
    assert "Files it opened" in proc and "/etc/hosts" in proc and "open <code>/etc/sudoers (read)</code>" in proc
    assert "killed at open" in proc
    assert process_row(shadow)["result"] == "EACCES" and process_row(shadow)["path"] == "/etc/shadow"


def test_feeds_and_search_filter_opens_by_event_and_path(node, client, staff):
    ingest_batch(node, [proc_event(1), open_event(2, "/etc/shadow"), open_event(3, "/run/docker.sock")])
    only = EventFilter.parse({"event": "open", "path": "docker"})
    rows = [process_row(p) for p in ProcessEvent.objects.all()]
    assert [r["path"] for r in rows if only.matches(r)] == ["/run/docker.sock"]
    assert [p.seq for p in only.apply(ProcessEvent.objects.all(), "verdict")] == [3]
    client.force_login(staff)
    page = client.get("/events/?kind=processes&event=open").content.decode()
    assert "/etc/shadow" in page and "/run/docker.sock" in page and "/bin/sh -c id" not in page
    bad = client.get("/events/?kind=processes&event=chmod")
    assert bad.status_code == 400 and "event must be one of" in bad.content.decode()
    export = client.get("/events/export.csv?kind=processes&event=open")
    assert export.status_code == 200 and b"/etc/shadow" in b"".join(export.streaming_content)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"access": ["exec"]}, "access"),
        ({"access": []}, "access"),
        ({"path": 5}, "path"),
        ({"result": -5000}, "result"),
    ],
)
def test_a_malformed_open_is_refused_by_field_and_the_rest_stored(node, change, field):
    result = ingest_batch(node, [open_event(1, "/etc/shadow", **change), open_event(2, "/etc/gshadow")])
    assert result.stored == 1 and [r["reason"].split(":")[0] for r in result.rejected] == [field]
    assert list(ProcessEvent.objects.values_list("path", flat=True)) == ["/etc/gshadow"]


FILE_POLICY = """\
rules:
  - id: no-shadow
    match: {path: /etc/shadow, access: [read]}
    action: deny
  - id: etc-writes
    match: {container: edge-*, path: /etc/*, access: [write, create, truncate], binary: "*/sh"}
    action: alert
"""


def test_file_rules_survive_import_export_and_reach_agents_as_written(tmp_path, node, client, staff):
    """A file rule must never lose its path on the way (it would become a match-all rule)."""
    policy = tmp_path / "files.yaml"
    policy.write_text(FILE_POLICY)
    call_command("policy", "import", str(policy))
    shadow = Rule.objects.get(rule_id="no-shadow")
    assert (shadow.path, shadow.access) == ("/etc/shadow", ["read"])
    specs = {s["id"]: s["match"] for s in current_policy()["rules"]}
    assert specs == {
        "no-shadow": {"path": "/etc/shadow", "access": ["read"]},
        "etc-writes": {"container": "edge-*", "path": "/etc/*", "access": ["write", "create", "truncate"],
                       "binary": "*/sh"},
    }  # fmt: skip
    assert [r.kind for r in RuleSet.from_specs(current_policy()["rules"]).rules] == ["open", "open"]
    out = io.StringIO()
    call_command("policy", "export", stdout=out)
    assert "path: /etc/shadow" in out.getvalue()
    ingest_batch(node, [open_event(1, "/etc/shadow"), open_event(2, "/etc/hosts", ("write",)), open_event(3, "/x")])
    client.force_login(staff)
    page = client.get("/rule-test/?path=/etc/*&access=write").content.decode()
    assert '<b id="draft-total">1</b> open in the last 24 hours' in page
    bad = client.get("/rule-test/?path=/etc/*&access=exec").content.decode()
    assert "match.access: must be a list" in bad


def test_a_bad_watch_list_stops_the_agent_before_it_loads_anything():
    with pytest.raises(CommandError, match="unknown access 'exec'"):
        call_command("runagent", "--file-watch", "/etc/*:exec", "--pin-root", "/sys/fs/bpf/crossedge-never-made")
    assert not os.path.exists("/sys/fs/bpf/crossedge-never-made")
