"""Browser feeds over websockets: live rows for logged-in users, refusals for others."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.asgi import application
from dashboard.events.ingest import ingest_batch

from .conftest import agent_event

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@database_sync_to_async
def session_cookie(user):
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.mark.django_db(transaction=True)
async def test_authenticated_socket_gets_backfill_then_live_violation(staff, node):
    await database_sync_to_async(ingest_batch)(node, [agent_event(1, comm="old")])
    ws = WebsocketCommunicator(application, "/ws/feed/violations/", headers=[ORIGIN, await session_cookie(staff)])
    connected, _ = await ws.connect()
    assert connected
    backfill = await ws.receive_json_from(timeout=5)
    assert backfill["type"] == "backfill" and [r["comm"] for r in backfill["rows"]] == ["old"]

    await database_sync_to_async(ingest_batch)(node, [agent_event(2, comm="<script>x</script>", rule_id="rule-007")])
    live = await ws.receive_json_from(timeout=5)
    assert live["type"] == "rows"
    (row,) = live["rows"]
    assert (row["rule_id"], row["comm"], row["container"]["name"]) == (
        "rule-007",
        "<script>x</script>",
        "edge-app-prod",
    )
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_connection_feed_streams_allowed_connections_too(staff, node):
    ws = WebsocketCommunicator(application, "/ws/feed/connections/", headers=[ORIGIN, await session_cookie(staff)])
    assert (await ws.connect())[0]
    await ws.receive_json_from(timeout=5)
    await database_sync_to_async(ingest_batch)(node, [agent_event(5, verdict="allow", rule_id="", severity="")])
    live = await ws.receive_json_from(timeout=5)
    assert live["rows"][0]["verdict"] == "allow"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_socket_is_refused():
    ws = WebsocketCommunicator(application, "/ws/feed/violations/", headers=[ORIGIN])
    connected, code = await ws.connect()
    assert not connected and code == 4401


@pytest.mark.django_db(transaction=True)
async def test_foreign_origin_is_refused(staff):
    ws = WebsocketCommunicator(
        application, "/ws/feed/violations/", headers=[(b"origin", b"http://evil.example"), await session_cookie(staff)]
    )
    connected, _ = await ws.connect()
    assert not connected
