"""Ingest on PostgreSQL, where rows go by COPY with keys taken from the sequences first
(dashboard/events/bulk.py): a group of every kind of event from two nodes is stored as
the rows say, the feeds get exactly what the database then holds, and a resend stores
nothing twice."""

import json

import pytest

SCRIPT = """
import datetime as dt
import json
from dashboard.events import feeds
from dashboard.events.ingest import ingest_batches
from dashboard.events.serializers import sources
from dashboard.events.models import ConnectionEvent, ProcessEvent, Violation
from dashboard.fleet.models import Container, Node
from dashboard.traffic.models import TrafficMinute
from tests.django.conftest import agent_event, enrolled, flood
from tests.django.test_file_events import open_event
from tests.django.test_process_events import proc_event
from tests.django.test_scans import limit_report
from tests.django.test_traffic import traffic
nodes = [enrolled("edge-pg-a"), enrolled("edge-pg-b")]
sent = []
feeds.publish = lambda feed, rows: rows and sent.append((feed, rows))  # (as publish: nothing for no rows)
a = [agent_event(1, dest_name="db.internal"), agent_event(2, family=6, dest_ip="2001:db8::7", verdict="deny",
     rule_id="r6", enforced=True), proc_event(3, args=["/bin/sh", "-c", "echo 'x'"], verdict="alert", rule_id="r"),
     proc_event(4, kind="exit"), open_event(5, "/etc/shadow", result=-13), traffic(seq=6), flood(7), limit_report(8)]
b = [agent_event(1, container={"runtime": "docker", "id": "cd" * 32, "name": "web", "pod_uid": "", "image": "w:1",
                               "labels": {"tier": "front", "n": "1"}}, cgroup_path="/docker/" + "cd" * 32)]
first = ingest_batches([(nodes[0], a), (nodes[1], b)])
again = ingest_batches([(nodes[0], a[:2]), (nodes[1], b)])
out = {"results": [[r.stored, r.duplicates, r.processed_seq] for r in first + again]}
out["published"] = {}
for feed, rows in sent:
    model, serialize, _ = sources()[feed]
    out["published"][feed] = rows == [serialize(r) for r in model.objects.order_by("id")]
out["connections"] = list(ConnectionEvent.objects.order_by("node__name", "seq").values_list(
    "node__name", "seq", "dest_ip", "dest_name", "family", "verdict", "container__name"))
out["processes"] = list(ProcessEvent.objects.order_by("seq").values_list("seq", "kind", "args", "exit_code", "result"))
out["traffic"] = list(TrafficMinute.objects.values_list("seq", "remote_ip", "bytes_out"))
out["violations"] = sorted(Violation.objects.values_list("kind", "rule_id", "event__seq", "process__seq", "seq"),
                           key=str)
out["containers"] = sorted(Container.objects.values_list("name", "labels"), key=str)
out["times"] = all(e.ts == dt.datetime.fromtimestamp(ev["ts_ns"] / 1e9, tz=dt.UTC) and e.received_at
                   for e, ev in zip(ConnectionEvent.objects.filter(node=nodes[0]).order_by("seq"), a[:2]))
out["last_seq"] = sorted(Node.objects.values_list("name", "last_seq"))
print(json.dumps(out, default=str))
"""


@pytest.mark.timeout(120)
def test_a_group_of_every_kind_is_stored_by_copy_as_it_was_sent(postgres):
    out = json.loads(postgres.manage("shell", "--no-imports", "-c", SCRIPT).splitlines()[-1])
    assert out["results"] == [[8, 0, 8], [1, 0, 1], [0, 2, 8], [0, 1, 1]]
    assert out["published"] == {"connections": True, "processes": True, "violations": True}
    assert out["connections"] == [
        ["edge-pg-a", 1, "127.10.10.5", "db.internal", 4, "alert", "edge-app-prod"],
        ["edge-pg-a", 2, "2001:db8::7", None, 6, "deny", "edge-app-prod"],
        ["edge-pg-b", 1, "127.10.10.5", None, 4, "alert", "web"],
    ]
    assert out["processes"] == [
        [3, "exec", ["/bin/sh", "-c", "echo 'x'"], None, None],
        [4, "exit", [], 9, None],
        [5, "open", [], None, -13],
    ]
    assert len(out["traffic"]) == 1 and out["traffic"][0][0] == 6
    kinds = [v[0] for v in out["violations"]]
    assert sorted(kinds) == ["connect", "connect", "connect", "exec", "flood", "limit"], out["violations"]
    assert ["web", {"n": "1", "tier": "front"}] in out["containers"]
    assert out["times"] is True
    assert out["last_seq"] == [["edge-pg-a", 8], ["edge-pg-b", 1]]
