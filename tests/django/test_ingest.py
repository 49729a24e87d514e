"""Storing agent batches: idempotent by (node, seq), bad events rejected alone."""

import pytest

from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, Violation
from dashboard.fleet.models import Container, Node

from .conftest import agent_event, flood


@pytest.mark.django_db
def test_batch_is_stored_with_containers_and_violations(node):
    batch = [
        agent_event(1),
        agent_event(2, verdict="allow", rule_id="", severity=""),
        agent_event(3, container=None, cgroup_path="/user.slice", verdict="deny", rule_id="rule-002"),
    ]
    result = ingest_batch(node, batch)
    assert (result.stored, result.duplicates, result.rejected, result.last_seq) == (3, 0, [], 3)
    assert Container.objects.get().name == "edge-app-prod"
    host_event = ConnectionEvent.objects.get(seq=3)
    assert host_event.container is None and host_event.cgroup_path == "/user.slice"
    assert sorted(Violation.objects.values_list("rule_id", "action")) == [("rule-001", "alert"), ("rule-002", "deny")]
    assert Node.objects.get(pk=node.pk).last_seq == 3


@pytest.mark.django_db
def test_resent_batch_stores_nothing_twice(node):
    batch = [agent_event(10), agent_event(11)]
    ingest_batch(node, batch)
    again = ingest_batch(node, batch + [agent_event(12)])
    assert (again.stored, again.duplicates) == (1, 2)
    assert ConnectionEvent.objects.count() == 3 and Violation.objects.count() == 3


@pytest.mark.django_db
def test_a_stale_node_row_still_finds_what_is_stored(node):
    """A consumer's Node may predate another worker's store (a reconnect while a batch was in
    flight): the last number is read inside the transaction, so even a flood report, which
    no unique constraint guards, is stored once."""
    stale = Node.objects.get(pk=node.pk)
    ingest_batch(node, [agent_event(1), flood(2)])
    again = ingest_batch(stale, [flood(2), agent_event(3)])
    assert (again.stored, again.duplicates, again.last_seq) == (1, 1, 3)
    assert Violation.objects.filter(kind="flood").count() == 1 and ConnectionEvent.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        {"tid": "1"},
        {"dest_ip": "not-an-ip"},
        {"dest_ip": "::1"},  # family 4
        {"dest_port": 70000},
        {"verdict": "maybe"},
        {"verdict": "deny", "rule_id": ""},
        {"comm": "x" * 65},
        {"pid": True},
        {"container": {"runtime": "docker"}},
        {"container": "edge"},
        {"ts_ns": -5},
        {"result": "refused"},
        {"result": 1},
        {"op": "bind"},
        {"unenforced": "x" * 201},
        {"unenforced": "only a deny can be unenforced"},  # verdict alert
        {"verdict": "deny", "enforced": True, "unenforced": "refused and not refused"},
        {"container": {"runtime": "docker", "id": "a", "name": "n", "pod_uid": "", "labels": ["app"]}},
        {"container": {"runtime": "docker", "id": "a", "name": "n", "pod_uid": "", "labels": {"k": 1}}},
        {"container": {"runtime": "docker", "id": "a", "name": "n", "pod_uid": "", "image": "i" * 256}},
    ],
)
def test_bad_event_is_rejected_the_rest_of_its_batch_is_stored(node, bad):
    result = ingest_batch(node, [agent_event(1), agent_event(2, **bad), agent_event(3)])
    assert result.stored == 2 and len(result.rejected) == 1
    assert result.rejected[0]["index"] == 1 and result.rejected[0]["reason"]
    assert sorted(ConnectionEvent.objects.values_list("seq", flat=True)) == [1, 3]


@pytest.mark.django_db
def test_a_deny_the_kernel_did_not_apply_is_stored_as_such_with_the_containers_image(node):
    why = "container not yet listed in the kernel"
    sent = agent_event(1, verdict="deny", rule_id="deny-9", result=None, unenforced=why, op="sendmsg")
    assert ingest_batch(node, [sent]).stored == 1
    v = Violation.objects.select_related("event", "container").get()
    assert (v.action, v.enforced, v.unenforced, v.event.unenforced, v.event.op) == ("deny", False, why, why, "sendmsg")
    assert (v.container.image, v.container.labels) == ("edge/app:1.4", {"app": "edge"})
    relabelled = agent_event(2, container=sent["container"] | {"labels": {"app": "edge", "tier": "web"}})
    ingest_batch(node, [relabelled])
    assert Container.objects.get().labels == {"app": "edge", "tier": "web"}


@pytest.mark.django_db
def test_a_batch_raced_by_another_worker_for_the_same_node_stores_the_rest(node, monkeypatch):
    """Two daphne workers storing overlapping batches of one node: the one that loses the
    race used to raise IntegrityError; now it checks again and counts duplicates (issue 16)."""
    from dashboard.events import ingest

    ingest_batch(node, [agent_event(1)])
    real, calls = ingest._known, []

    def racing(node, seqs):  # the first check runs before the other worker's insert commits
        calls.append(seqs)
        return set() if len(calls) == 1 else real(node, seqs)

    monkeypatch.setattr(ingest, "_known", racing)
    result = ingest_batch(node, [agent_event(1), agent_event(2)])
    assert (result.stored, result.duplicates, len(calls)) == (1, 1, 2)
    assert sorted(ConnectionEvent.objects.values_list("seq", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_non_object_events_are_rejected(node):
    result = ingest_batch(node, ["x", None, 5])
    assert result.stored == 0 and len(result.rejected) == 3


@pytest.mark.django_db
def test_an_unknown_result_is_stored_as_null_but_must_be_said(node):
    """The kernel observer sees a call before it runs: its result is null, not left out."""
    missing = agent_event(2)
    del missing["result"]
    result = ingest_batch(node, [agent_event(1, result=None), missing])
    assert result.stored == 1 and "result" in result.rejected[0]["reason"]
    assert ConnectionEvent.objects.get(seq=1).result is None
