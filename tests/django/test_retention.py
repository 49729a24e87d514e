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
from dashboard.events.retention import prune

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
