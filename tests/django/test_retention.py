"""Retention: events past their age are summed into per-minute rollups and deleted (their
violations with them), exactly those and no others, a batch at a time; rollups past their
own age go too; the Nodes page and /metrics say what is kept and how big it is."""

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, ProcessEvent, Rollup, Violation
from dashboard.events.retention import prune, used_bytes

from .conftest import agent_event
from .test_file_events import open_event

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def at(days_ago: float) -> int:
    return int((NOW - dt.timedelta(days=days_ago)).timestamp() * 1e9)


def test_prune_rolls_up_and_deletes_exactly_what_is_past_its_age(node):
    old = [agent_event(i, ts_ns=at(8) + i * 10**9, count=3) for i in range(1, 6)]  # 5 rows, 15 connections
    old += [agent_event(6, ts_ns=at(9), family=6, dest_ip="::1", verdict="deny", rule_id="no-v6", severity="high")]
    old += [open_event(7, "/etc/shadow", ts_ns=at(10), count=40)]
    new = [agent_event(8, ts_ns=at(6.9)), agent_event(9, ts_ns=at(0), verdict="alert", rule_id="r1", severity="low"),
           open_event(10, "/etc/shadow", ts_ns=at(1))]  # fmt: skip
    assert ingest_batch(node, old + new).stored == 10
    done = prune(NOW, days=7, batch=2, duty=1)
    assert done.events == {"connectionevent": 6, "processevent": 1} and done.batches == 4  # 2+2+2, then 1
    assert sorted(ConnectionEvent.objects.values_list("seq", flat=True)) == [8, 9]
    assert list(ProcessEvent.objects.values_list("seq", flat=True)) == [10]
    assert sorted(Violation.objects.values_list("rule_id", flat=True)) == ["r1", "rule-001"]  # the old ones went too
    rolled = Rollup.objects.all()
    assert rolled.aggregate(n=Sum("count"))["n"] == 15 + 1 + 40  # every connection and open it stood for
    assert rolled.filter(kind="connect", target="127.10.10.5:443").aggregate(n=Sum("count"))["n"] == 15
    [v6] = rolled.filter(rule_id="no-v6")
    assert (v6.target, v6.verdict, v6.count, v6.container.name) == ("[::1]:443", "deny", 1, "edge-app-prod")
    [shadow] = rolled.filter(kind="open")
    assert (shadow.target, shadow.count) == ("/etc/shadow", 40)
    again = prune(NOW, days=7, duty=1)
    assert sum(again.events.values()) == 0 and Rollup.objects.aggregate(n=Sum("count"))["n"] == 56


def test_rollups_go_after_their_own_age_and_zero_keeps_everything(node):
    ingest_batch(node, [agent_event(1, ts_ns=at(30)), agent_event(2, ts_ns=at(3))])
    assert sum(prune(NOW, days=0, rollup_days=0).events.values()) == 0 and ConnectionEvent.objects.count() == 2
    prune(NOW, days=7, rollup_days=400)
    assert Rollup.objects.count() == 1 and ConnectionEvent.objects.count() == 1
    assert prune(NOW, days=7, rollup_days=20).rollups == 1 and not Rollup.objects.exists()


def test_the_command_reports_and_refuses_nonsense(node, client, staff):
    ingest_batch(node, [agent_event(1, ts_ns=at(8))])
    out = io.StringIO()
    call_command("prune", "--days", "7", stdout=out)
    assert "pruned 1 event(s) older than 7 days (connectionevent: 1, processevent: 0) into 1 rollup row(s)" in (
        out.getvalue()
    )  # fmt: skip
    with pytest.raises(CommandError, match="must not be negative"):
        call_command("prune", "--days", "-1")
    client.force_login(staff)
    page = client.get("/nodes/").content.decode()
    assert "Raw events are kept 7 days" in page and "kept 400 days" in page
    rolled = dt.datetime.fromtimestamp(Rollup.objects.get().minute * 60, tz=dt.UTC)
    assert f"(the oldest from {rolled:%Y-%m-%d %H:%M})" in page
    assert "Raw events of the last 7 days: older ones are kept only as per-minute rollups" in (
        client.get("/events/").content.decode()
    )  # fmt: skip


def test_a_size_bound_removes_the_oldest_events_first_until_the_data_fits(node, settings, client, staff):
    base = used_bytes()
    for start in range(0, 6000, 500):  # 5 days, each event to a destination of its own, oldest first
        ingest_batch(node, [agent_event(i + 1, ts_ns=at(5 - i / 1200), dest_ip=f"127.1.{i // 250}.{i % 250}")
                            for i in range(start, start + 500)])  # fmt: skip
    full = used_bytes()
    bound = base + (full - base) // 2
    done = prune(NOW, days=7, max_bytes=bound, batch=500, duty=1)
    assert used_bytes() <= bound * 0.85  # pruned to the low-water mark, not just under the bound
    kept = sorted(ConnectionEvent.objects.values_list("seq", flat=True))
    removed = done.events["connectionevent"]
    assert 0 < removed < 6000 and kept == list(range(removed + 1, 6001))  # the oldest went, the newest stay
    assert Rollup.objects.aggregate(n=Sum("count"))["n"] == removed and done.size_cutoff is not None
    assert not done.rollups_by_size
    assert sum(prune(NOW, days=7, max_bytes=bound, duty=1).events.values()) == 0  # within the bound: nothing
    settings.RETENTION_MB = 1
    client.force_login(staff)
    assert "bounded to 1.0" in client.get("/nodes/").content.decode()
    metrics = client.get("/metrics").content.decode()
    assert "crossedge_database_used_bytes" in metrics and "crossedge_database_limit_bytes 1.048576e+06" in metrics


def test_once_no_events_are_left_the_oldest_rollups_go_and_it_stops_when_nothing_is_left(node):
    ingest_batch(node, [agent_event(i, ts_ns=at(21 - i), dest_ip=f"127.2.0.{i}") for i in range(1, 21)])
    prune(NOW, days=7)
    assert Rollup.objects.count() == 13 and ConnectionEvent.objects.count() == 7
    done = prune(NOW, days=7, max_bytes=1, duty=1)  # less than the dashboard's own tables: all of ours goes
    assert not ConnectionEvent.objects.exists() and not Rollup.objects.exists()
    assert done.events["connectionevent"] == 7 and done.rollups_by_size == 20


def test_the_rule_page_counts_old_periods_from_rollups_each_call_once(node, client, viewer):
    from dashboard.events.periods import rule_hits
    from dashboard.policy.models import Rule

    Rule.objects.create(rule_id="r-old", action="alert", dest_ip="127.3.0.0/24")
    old = [agent_event(i, ts_ns=at(20) + i * 10**9, count=4, rule_id="r-old", dest_ip=f"127.3.0.{i}") for i in (1, 2)]
    old += [agent_event(3, ts_ns=at(20), verdict="deny", rule_id="r-old", severity="high", dest_ip="127.3.0.3")]
    new = [agent_event(4, ts_ns=at(0.1), count=5, rule_id="r-old", dest_ip="127.3.0.4")]
    ingest_batch(node, old + new)
    before = {p: rule_hits("r-old", p, NOW) for p in ("30d", "1y")}
    prune(NOW, days=7, duty=1)  # the 20-day-old ones are rolled up now
    assert Rollup.objects.filter(rule_id="r-old").aggregate(n=Sum("count"))["n"] == 9
    for period, buckets in before.items():
        assert rule_hits("r-old", period, NOW) == buckets  # the same answer from rollups as from raw rows

    def total(buckets, action):
        return sum(counts.get(action, 0) for _, counts in buckets)

    month = rule_hits("r-old", "30d", NOW)
    assert (total(month, "alert"), total(month, "deny")) == (13, 1) and len(month) == 31
    [(label, counts)] = [(label, c) for label, c in month if c.get("deny")]
    assert counts == {"alert": 8, "deny": 1} and label == (NOW - dt.timedelta(days=20)).strftime("%m-%d")
    assert total(rule_hits("r-old", "24h", NOW), "alert") == 5
    assert total(rule_hits("r-old", "1y", NOW), "alert") == 13
    client.force_login(viewer)
    page = client.get("/rules/r-old/?period=30d").content.decode()
    assert "Hits per day, last 30 days" in page and "8 alert" in page and "per-minute rollups" in page
    assert client.get("/rules/r-old/?period=forever").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_pruning_while_the_feed_runs_removes_exactly_the_old_and_the_feed_misses_no_new_row(staff, node):
    import asyncio

    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from dashboard.asgi import application

    from .test_feeds import ORIGIN, session_cookie

    ingest = database_sync_to_async(ingest_batch)
    old = [agent_event(i, ts_ns=at(8) + i, dest_ip=f"127.4.{i // 250}.{i % 250}") for i in range(1, 1201)]
    await ingest(node, old)
    ws = WebsocketCommunicator(application, "/ws/feed/violations/", headers=[ORIGIN, await session_cookie(staff)])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from(timeout=5))["type"] == "backfill"
    pruning = asyncio.ensure_future(
        database_sync_to_async(prune, thread_sensitive=False)(NOW, days=7, batch=100, duty=0.5)
    )
    for k in range(20):  # live violations while the pruner deletes the old ones
        await ingest(node, [agent_event(5000 + k, comm=f"live-{k}")])
        await asyncio.sleep(0.05)
    done = await pruning
    seen, kinds = set(), set()
    while len(seen) < 20:
        message = await ws.receive_json_from(timeout=10)
        kinds.add(message["type"])
        seen |= {r["comm"] for r in message["rows"] if r["comm"].startswith("live-")}
    await ws.disconnect()
    assert seen == {f"live-{k}" for k in range(20)} and kinds == {"rows"}  # every one, live, no gap to repair
    assert done.events["connectionevent"] == 1200 and done.batches == 12

    @database_sync_to_async
    def stored():
        return sorted(ConnectionEvent.objects.values_list("seq", flat=True)), Rollup.objects.aggregate(n=Sum("count"))

    seqs, rolled = await stored()
    assert seqs == list(range(5000, 5020)) and rolled["n"] == 1200
