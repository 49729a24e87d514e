"""Process records from an agent: stored with their container and parent, flagged ones as
violations with their binary; a malformed one is refused with the field at fault (the rest
of its batch still stored); the container's process tree follows who spawned what."""

import pytest

from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from dashboard.events.process_tree import process_tree
from dashboard.fleet.models import Container

from .conftest import agent_event

pytestmark = pytest.mark.django_db


def proc_event(seq, kind="exec", **overrides):
    event = agent_event(seq, kind=kind, verdict="allow", rule_id="", severity="")
    for name in ("family", "dest_ip", "dest_port", "result", "op"):
        del event[name]
    event.update(ppid=1, start_ns=1000 + seq, parent_comm="containerd-shim", parent_binary="", binary="/bin/sh",
                 args=["/bin/sh", "-c", "id"], cut=False)  # fmt: skip
    if kind == "exit":
        event.update(binary="", args=[], exit_code=9, lifetime_ns=5_000_000)
    event.update(overrides)
    return event


def test_execs_and_exits_are_stored_and_a_killed_exec_is_a_violation(node):
    batch = [
        proc_event(1, pid=10, start_ns=10),
        proc_event(
            2,
            pid=11,
            ppid=10,
            start_ns=11,
            binary="/dev/shm/x",
            parent_binary="/bin/sh",
            verdict="deny",
            rule_id="no-shm",
            severity="critical",
            enforced=True,
        ),  # fmt: skip
        proc_event(3, kind="exit", pid=11, ppid=10, start_ns=11),
        agent_event(4),
    ]
    result = ingest_batch(node, batch)
    assert (result.stored, result.rejected) == (4, [])
    assert ProcessEvent.objects.count() == 3 and ConnectionEvent.objects.count() == 1
    v = Violation.objects.get(rule_id="no-shm")
    assert (v.kind, v.target, v.enforced, v.process.pid, v.event, v.dest_ip) == (
        "exec",
        "/dev/shm/x",
        True,
        11,
        None,
        None,
    )
    assert Violation.objects.get(rule_id="rule-001").target == "127.10.10.5:443"
    assert ProcessEvent.objects.get(kind="exit").exit_text == "killed by signal 9"
    [(parent, [root])] = process_tree(Container.objects.get(name="edge-app-prod"))
    assert parent == "containerd-shim [1]" and root.pid == 10
    [child] = root.children
    assert (child.binaries, child.violations, child.exit.exit_code) == (["/dev/shm/x"], 1, 9)


def test_a_seq_is_unique_across_kinds(node):
    assert ingest_batch(node, [proc_event(7)]).stored == 1
    again = ingest_batch(node, [agent_event(7), proc_event(7)])
    assert (again.stored, again.duplicates) == (0, 2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "chmod"}, "kind"),
        ({"binary": 5}, "binary"),
        ({"args": "sh -c id"}, "args"),
        ({"args": ["x" * 2000]}, "args"),
        ({"ppid": -1}, "ppid"),
        ({"exit_code": "9"}, "exit_code"),
    ],
)
def test_a_malformed_process_record_is_refused_by_field_and_the_rest_stored(node, change, field):
    kind = "exit" if "exit_code" in change else "exec"
    bad = proc_event(1, kind=kind) | change
    result = ingest_batch(node, [bad, proc_event(2)])
    assert result.stored == 1 and result.rejected[0]["reason"].startswith(f"{field}:")


def test_the_process_page_shows_its_ancestry_children_exit_violations_and_connections(node, client, staff):
    batch = [
        proc_event(1, pid=10, start_ns=10, binary="/usr/sbin/nginx", args=["nginx"]),
        proc_event(2, pid=11, ppid=10, start_ns=11, binary="/bin/sh", parent_binary="/usr/sbin/nginx"),
        proc_event(
            3,
            pid=12,
            ppid=11,
            start_ns=12,
            binary="/tmp/evil",
            parent_binary="/bin/sh",
            verdict="deny",
            rule_id="no-tmp",
            severity="high",
            enforced=True,
        ),  # fmt: skip
        agent_event(5, pid=11, dest_ip="127.10.10.5", rule_id="rule-001"),
        agent_event(6, pid=99, dest_ip="127.8.8.8", verdict="allow", rule_id="", severity=""),  # another process
        proc_event(4, kind="exit", pid=11, ppid=10, start_ns=11, lifetime_ns=2_500_000, exit_code=0),  # after them
    ]
    assert ingest_batch(node, batch).stored == 6
    shell = ProcessEvent.objects.get(pid=11, kind="exec")
    client.force_login(staff)
    page = client.get(f"/processes/{shell.pk}/").content.decode()
    assert "/usr/sbin/nginx</code> [10]" in page and "started by containerd-shim [1]" in page  # ancestry
    assert "/tmp/evil</code> [12]" in page  # what it started
    assert "exit 0" in page and "2.5 ms" in page
    assert "127.10.10.5:443" in page and "127.8.8.8" not in page  # its own connections only
    evil = ProcessEvent.objects.get(pid=12)
    assert "killed at exec" in client.get(f"/processes/{evil.pk}/").content.decode()
    assert client.get("/processes/999999/").status_code == 404
    api = client.get("/api/processes/?container=edge-app-prod&action=deny").json()["results"]
    assert [(r["pid"], r["binary"], r["verdict"]) for r in api] == [(12, "/tmp/evil", "deny")]


def test_processes_are_searched_and_exported_like_connections(node, client, staff):
    ingest_batch(node, [proc_event(1, pid=10, binary="/bin/sh"), proc_event(2, kind="exit", pid=10, exit_code=768)])
    client.force_login(staff)
    page = client.get("/events/?kind=processes&container=edge-app-prod").content.decode()
    assert "exec <code>/bin/sh</code>" in page and "ended: exit 3" in page
    csv = b"".join(client.get("/events/export.csv?kind=processes").streaming_content).decode()
    header, *rows = csv.strip().splitlines()
    assert "binary" in header and "args" in header and len(rows) == 2
    assert client.get("/events/?kind=files").status_code == 400


def test_a_draft_exec_rule_is_replayed_over_stored_execs(node, client, staff):
    ingest_batch(node, [proc_event(1, pid=10, binary="/dev/shm/x", parent_binary="/usr/sbin/nginx"),
                        proc_event(2, pid=11, binary="/bin/sh"), agent_event(3)])  # fmt: skip
    client.force_login(staff)
    page = client.get("/rule-test/?binary=/dev/shm/*&parent=*/nginx").content.decode()
    assert '<b id="draft-total">1</b> exec in the last 24 hours' in page and "edge-app-prod" in page
    mixed = client.get("/rule-test/?binary=/bin/sh&dest_port=22").content.decode()
    assert "one kind of event, not connections and execs" in mixed  # the engine's own error, as the admin gives it
