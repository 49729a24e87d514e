"""Retention on PostgreSQL: events past their age go, exactly those; the size bound, whose
figure PostgreSQL's own sizes cannot give (they keep the space VACUUM freed, and its row
statistics lag behind deletes), estimates what the rows take, close to the real size of a
fresh table, and prunes the oldest down to the low-water mark and no further."""

import json

import pytest

SCRIPT = """
import datetime as dt, json
from django.db import connection
from django.utils import timezone
from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, Rollup, Violation
from dashboard.events.retention import prune, used_bytes
from dashboard.fleet.models import Node
from tests.django.conftest import agent_event
node = Node(name="edge-pg")
node.token = node.issue_token()
node.save()
now = timezone.now()
def ts(hours):
    return int((now - dt.timedelta(hours=hours)).timestamp() * 1e9)
def sql(query):
    with connection.cursor() as cur:
        cur.execute(query)
        return cur.fetchone()[0] if cur.description else None
out = {}
# By age: 12 events 9.75 to 4.25 days old (every 12 h); the 6 older than 7 days go, batches of 2.
ingest_batch(node, [agent_event(i, ts_ns=ts(246 - i * 12), dest_ip=f"127.5.0.{i}") for i in range(1, 13)])
done = prune(now, days=7, batch=2, duty=1)
out["age"] = [done.events["connectionevent"], done.batches, done.violations,
              sorted(ConnectionEvent.objects.values_list("seq", flat=True)), Rollup.objects.count()]
ConnectionEvent.objects.all().delete(); Rollup.objects.all().delete()
# By size: 12,000 events over the last 48 hours (each with its violation), oldest first.
for start in range(0, 12000, 1000):
    ingest_batch(node, [agent_event(100 + i, ts_ns=ts(48 - i / 250), dest_ip=f"127.6.{i // 250}.{i % 250}")
                        for i in range(start, start + 1000)])
sql("VACUUM FULL ANALYZE")  # fresh files: their size is what the rows take
out["real"] = int(sql("SELECT SUM(pg_total_relation_size(relid)) FROM pg_stat_user_tables"))
out["estimate"] = used_bytes()
out["planner_estimate"] = used_bytes(counted=False)  # what pages and /metrics show, without count(*)
events = sql("SELECT pg_total_relation_size('events_connectionevent') + pg_total_relation_size('events_violation')")
out["bound"] = out["real"] - events // 2
done = prune(now, days=7, max_bytes=out["bound"], duty=1)
out["deleted"] = done.events["connectionevent"]
seqs = sorted(ConnectionEvent.objects.values_list("seq", flat=True))
out["first_kept"], out["kept"], out["after"] = seqs[0], len(seqs), used_bytes()
out["rolled"] = sum(Rollup.objects.values_list("count", flat=True))
print(json.dumps(out))
"""


@pytest.mark.timeout(180)
def test_retention_by_age_and_by_size_on_postgresql(postgres):
    out = json.loads(postgres.manage("shell", "--no-imports", "-c", SCRIPT).splitlines()[-1])
    assert out["age"] == [6, 3, 6, [7, 8, 9, 10, 11, 12], 6]  # 246-12i h: i = 1..6 are past 7 days (168 h)
    assert 0.8 < out["estimate"] / out["real"] < 1.2, out  # the estimate is close to the real size
    assert 0.8 < out["planner_estimate"] / out["real"] < 1.2, out
    deleted, bound = out["deleted"], out["bound"]
    assert 0 < deleted < 12000 and out["kept"] == 12000 - deleted and out["first_kept"] == 100 + deleted, out
    assert out["rolled"] == deleted  # the oldest went, rolled up
    assert 0.7 * bound < out["after"] <= 0.85 * bound, out  # down to the low-water mark, not far past it
