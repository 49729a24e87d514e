"""Filtered feeds, numbered messages, resync after a dropped update, catch-up after a
reconnect, and sockets closed when their session ends."""

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.db.models import F
from django.test import Client

from dashboard.asgi import application
from dashboard.events import consumers, feeds
from dashboard.events.feeds import FEEDS
from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent
from dashboard.events.serializers import connection_row

from .conftest import agent_event

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
STAGING = {"runtime": "docker", "id": "cd" * 32, "name": "edge-app-staging", "pod_uid": ""}


@database_sync_to_async
def login(user):
    client = Client()
    client.force_login(user)
    return client


def socket(client, path):
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    return WebsocketCommunicator(application, path, headers=[ORIGIN, cookie])


def staging_event(seq, **kw):
    return agent_event(seq, container=STAGING, cgroup_path="/docker/" + "cd" * 32, **kw)


@pytest.mark.django_db(transaction=True)
async def test_the_filter_is_applied_on_the_server(staff, node):
    client = await login(staff)
    ws = socket(client, "/ws/feed/violations/?container=edge-app-staging&action=deny")
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["rows"] == []
    await database_sync_to_async(ingest_batch)(
        node,
        [
            agent_event(1, verdict="deny", rule_id="r"),  # prod: filtered out
            staging_event(2, verdict="alert", rule_id="r"),  # wrong action
            staging_event(3, verdict="deny", rule_id="r", comm="wanted"),
        ],
    )
    msg = await ws.receive_json_from(timeout=5)
    assert (msg["type"], msg["seq"], [r["comm"] for r in msg["rows"]]) == ("rows", 2, ["wanted"])
    assert await ws.receive_nothing(0.3)
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_bad_filter_is_refused(staff):
    ws = socket(await login(staff), "/ws/feed/connections/?action=maybe")
    connected, code = await ws.connect()
    assert not connected and code == 4400


@pytest.mark.django_db(transaction=True)
async def test_a_dropped_update_is_resynced_from_the_database(staff, node):
    client = await login(staff)
    ws = socket(client, "/ws/feed/connections/")
    assert (await ws.connect())[0]
    await ws.receive_json_from()
    await database_sync_to_async(ingest_batch)(node, [agent_event(1, comm="first")])
    assert [r["comm"] for r in (await ws.receive_json_from(timeout=5))["rows"]] == ["first"]
    # A publication that never reaches this socket (a full channel drops it): the number is
    # used, the message is not delivered; the next one reveals the gap.
    next(feeds._numbers["connections"])
    await database_sync_to_async(ingest_batch)(node, [agent_event(2, comm="after gap")])
    msg = await ws.receive_json_from(timeout=5)
    assert msg["type"] == "resync" and "1 update(s) were dropped" in msg["reason"]
    assert [r["comm"] for r in msg["rows"]] == ["after gap"]
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_reconnect_with_after_gets_exactly_the_missed_rows(staff, node):
    await database_sync_to_async(ingest_batch)(node, [agent_event(i, comm=f"e{i}") for i in range(1, 6)])
    client = await login(staff)
    first = socket(client, "/ws/feed/connections/")
    assert (await first.connect())[0]
    rows = (await first.receive_json_from())["rows"]
    await first.disconnect()
    seen = rows[2]["id"]  # the page had shown up to the third
    again = socket(client, f"/ws/feed/connections/?after={seen}")
    assert (await again.connect())[0]
    comms = [r["comm"] for r in (await again.receive_json_from())["rows"]]
    # the rows stored about as early as the last one shown come again (the page skips those it
    # has): one of them may have committed after the page saw a higher id
    assert comms == ["e1", "e2", "e3", "e4", "e5"]
    await again.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_reconnect_brings_a_row_that_committed_late_with_a_lower_id(staff, node, settings):
    """With several daphnes on PostgreSQL a row can commit after a higher id was shown; a
    reconnect asking for `id > last shown` used to skip it for good (issue 16)."""
    settings.FEED_SETTLE = 30
    await database_sync_to_async(ingest_batch)(node, [agent_event(i, comm=f"e{i}") for i in range(1, 4)])

    def reshape():  # e2 "took its id" before e3 but committed after the page saw e3
        ConnectionEvent.objects.filter(comm="e1").update(received_at=F("received_at") - dt.timedelta(seconds=60))
        e2 = ConnectionEvent.objects.get(comm="e2")
        e3 = ConnectionEvent.objects.get(comm="e3")
        return e2.id, e3.id

    late, shown = await database_sync_to_async(reshape)()
    assert late < shown
    ws = socket(await login(staff), f"/ws/feed/connections/?after={shown}")
    assert (await ws.connect())[0]
    comms = [r["comm"] for r in (await ws.receive_json_from())["rows"]]
    assert "e2" in comms and "e1" not in comms  # e1: stored a minute before, not a late commit
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_catch_up_past_its_cap_says_so_and_brings_the_newest(staff, node, monkeypatch):
    """Catch-up stopped at 1,000 rows without saying so (issue 16)."""
    monkeypatch.setattr(consumers, "MAX_CATCH_UP", 3)
    await database_sync_to_async(ingest_batch)(node, [agent_event(i, comm=f"e{i}") for i in range(1, 7)])
    first_id = await database_sync_to_async(lambda: ConnectionEvent.objects.order_by("id").first().id)()
    ws = socket(await login(staff), f"/ws/feed/connections/?after={first_id}")
    assert (await ws.connect())[0]
    msg = await ws.receive_json_from()
    assert [r["comm"] for r in msg["rows"]] == ["e4", "e5", "e6"] and "more than 3 rows" in msg["notice"]
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_row_that_commits_late_with_a_lower_id_is_still_shown(staff, node):
    """Several dashboard processes on PostgreSQL commit ids out of order: a live row with a
    lower id than one already shown used to be dropped silently (issue 16)."""
    await database_sync_to_async(ingest_batch)(node, [agent_event(i, comm=f"e{i}") for i in (1, 2)])
    rows = await database_sync_to_async(lambda: [connection_row(e) for e in ConnectionEvent.objects.order_by("id")])()
    ws = socket(await login(staff), "/ws/feed/connections/")
    assert (await ws.connect())[0]
    await ws.receive_json_from()  # backfill: both
    newer = rows[0] | {"id": rows[1]["id"] + 5, "comm": "newer"}
    late = rows[0] | {"id": rows[1]["id"] + 3, "comm": "late"}  # committed after `newer`
    layer = get_channel_layer()
    for n, row in enumerate((newer, late, late), start=1):  # the higher id first, the late one, a repeat
        await layer.group_send(FEEDS["connections"], {"type": "feed.rows", "rows": [row], "pub": "other", "n": n})
    assert [r["comm"] for r in (await ws.receive_json_from(timeout=5))["rows"]] == ["newer"]
    assert [r["comm"] for r in (await ws.receive_json_from(timeout=5))["rows"]] == ["late"]
    assert await ws.receive_nothing(timeout=0.3)  # the repeat: never sent twice
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_logout_closes_the_sessions_sockets_at_once(staff):
    client = await login(staff)
    ws = socket(client, "/ws/feed/violations/")
    assert (await ws.connect())[0]
    await ws.receive_json_from()
    await database_sync_to_async(client.post)("/accounts/logout/")
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


@pytest.mark.django_db(transaction=True)
async def test_an_expired_session_is_noticed_by_the_periodic_check(staff, monkeypatch):
    monkeypatch.setattr(consumers, "SESSION_CHECK", 0.2)
    client = await login(staff)
    ws = socket(client, "/ws/feed/violations/")
    assert (await ws.connect())[0]
    await ws.receive_json_from()
    await database_sync_to_async(Session.objects.all().delete)()  # e.g. an admin cleared sessions
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["deactivated", "password changed elsewhere"])
async def test_a_user_who_may_no_longer_log_in_loses_the_feed(staff, monkeypatch, change):
    """Open feeds used to survive a user's deactivation or password change (issue 16)."""
    monkeypatch.setattr(consumers, "SESSION_CHECK", 0.2)
    client = await login(staff)
    ws = socket(client, "/ws/feed/violations/")
    assert (await ws.connect())[0]
    await ws.receive_json_from()
    await asyncio.sleep(0.5)
    assert await ws.receive_nothing(timeout=0.1)  # still open while nothing changed

    def apply():
        if change == "deactivated":
            staff.is_active = False
        else:
            staff.set_password("pw-new-staff-456")
        staff.save()

    await database_sync_to_async(apply)()
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


def test_feed_groups_are_named_for_the_layer():
    assert all(len(g) < 100 and g.replace("-", "").isalnum() for g in FEEDS.values())
