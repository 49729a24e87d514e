"""Many agents' batches stored together (ingest_batches): each batch gets the result it would
get stored alone, the group is one transaction with one publish per feed, and a group that
fails (a race with another worker, a batch the database refuses) is stored batch by batch,
so one agent's fault stays its own."""

import pytest

from dashboard.events import feeds, ingest
from dashboard.events.ingest import IngestResult, ingest_batch, ingest_batches
from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from dashboard.events.serializers import sources
from dashboard.fleet.models import Container, Node

from .conftest import agent_event, enrolled, flood
from .test_file_events import open_event
from .test_process_events import proc_event

ALLOW = {"verdict": "allow", "rule_id": "", "severity": ""}
SOURCES = sources()


@pytest.fixture
def nodes(db):
    return [enrolled("edge-a"), enrolled("edge-b")]


def stored(node):
    return sorted(ConnectionEvent.objects.filter(node=node).values_list("seq", flat=True))


def test_each_batch_of_a_group_gets_its_own_result(nodes):
    a, b = nodes
    ingest_batch(a, [agent_event(1)])
    exec_alert = proc_event(3, verdict="alert", rule_id="r-exec")
    results = ingest_batches([
        (a, [agent_event(1), agent_event(2, **ALLOW)]),  # 1 was stored before
        (b, [agent_event(1), agent_event(2, dest_ip="bad"), exec_alert, flood(4)]),
        (a, [agent_event(2), agent_event(3, container=None, cgroup_path="/user.slice")]),  # 2: the first batch's
    ])  # fmt: skip
    assert [(r.stored, r.duplicates, r.processed_seq, r.last_seq, len(r.rejected)) for r in results] == [
        (1, 1, 2, 3, 0),
        (3, 0, 4, 4, 1),
        (1, 1, 3, 3, 0),
    ]
    assert (stored(a), stored(b)) == ([1, 2, 3], [1])
    assert list(ProcessEvent.objects.filter(node=b).values_list("seq", flat=True)) == [3]
    assert {n.name: n.last_seq for n in Node.objects.all()} == {"edge-a": 3, "edge-b": 4}
    assert (a.last_seq, b.last_seq) == (3, 4)  # the consumers' own rows move on too
    # violations name their events; one container a node, from the events that had one
    violations = Violation.objects.values_list("node__name", "kind", "event__seq", "process__seq", "seq")
    assert sorted(violations, key=str) == sorted([
        ("edge-a", "connect", 1, None, None),  # stored before the group
        ("edge-a", "connect", 3, None, None),  # (seq 2 is the first batch's allow)
        ("edge-b", "connect", 1, None, None),
        ("edge-b", "exec", None, 3, None),
        ("edge-b", "flood", None, None, 4),
    ], key=str)  # fmt: skip
    assert sorted(Container.objects.values_list("node__name", "name")) == [("edge-a", "edge-app-prod"),
                                                                           ("edge-b", "edge-app-prod")]  # fmt: skip


def test_a_group_is_published_once_per_feed(nodes, monkeypatch, django_capture_on_commit_callbacks):
    a, b = nodes
    sent = []
    monkeypatch.setattr(feeds, "publish", lambda feed, rows: sent.append((feed, rows)))
    processes = [proc_event(2), proc_event(3, kind="exit"), open_event(4, "/etc/shadow", verdict="alert", rule_id="r")]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_batches([(a, [agent_event(1), agent_event(2, **ALLOW)]), (b, [agent_event(1), *processes, flood(5)])])
    assert [feed for feed, _ in sent] == ["connections", "processes", "violations"]
    # the rows as the feeds' backfill serializes them from the database: the same
    for feed, rows in sent:
        model, serialize, _ = SOURCES[feed]
        assert rows == [serialize(r) for r in model.objects.order_by("id")], feed
    assert [len(rows) for _, rows in sent] == [3, 3, 4]  # violations: a's 1, b's 1, the open's, the flood


def test_a_race_in_a_group_is_settled_batch_by_batch(nodes, monkeypatch):
    """Another worker stored one of a's numbers after this group looked: the group's insert
    fails on (node, seq), and each batch is stored again on its own."""
    a, b = nodes
    ingest_batch(a, [agent_event(1)])
    real, calls = ingest._known, []

    def racing(node, seqs):  # the group's look runs before the other worker's insert commits
        calls.append(seqs)
        return set() if len(calls) == 1 else real(node, seqs)

    monkeypatch.setattr(ingest, "_known", racing)
    results = ingest_batches([(a, [agent_event(1), agent_event(2)]), (b, [agent_event(1)])])
    assert [(r.stored, r.duplicates) for r in results] == [(1, 1), (1, 0)] and len(calls) == 2
    assert (stored(a), stored(b)) == ([1, 2], [1])


def test_a_batch_the_database_refuses_fails_alone(nodes, monkeypatch):
    a, b = nodes
    real = ingest._event_row

    def refusing(node, e, container):
        if e["comm"] == "poison":
            raise ValueError("refused")
        return real(node, e, container)

    monkeypatch.setattr(ingest, "_event_row", refusing)
    results = ingest_batches([(a, [agent_event(1, comm="poison")]), (b, [agent_event(1), agent_event(2)])])
    assert isinstance(results[0], ValueError) and isinstance(results[1], IngestResult)
    assert results[1].stored == 2 and (stored(a), stored(b)) == ([], [1, 2])
    assert Node.objects.get(pk=a.pk).last_seq == 0
    with pytest.raises(ValueError, match="refused"):
        ingest_batch(a, [agent_event(1, comm="poison")])


def test_a_row_names_only_its_models_fields():
    from dashboard.events import bulk

    event = bulk.row(ConnectionEvent, seq=1, node_id=7, container=None, dest_port=443, dest_port_hi=445)
    # keys by the attribute, objects by the name, defaults, and the model's properties
    assert (event.pk, event.node_id, event.container, event.container_id, event.count, event.ports) == (
        None, 7, None, None, 1, "443-445")  # fmt: skip
    with pytest.raises(TypeError, match="dest_ipp"):
        bulk.row(ConnectionEvent, dest_ipp="127.0.0.1")
