"""The dashboard's end of the agent protocol."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from dashboard.asgi import application
from dashboard.events.models import ConnectionEvent
from dashboard.fleet.models import Node
from dashboard.policy.models import Rule

from .conftest import agent_event

HELLO = {"type": "hello", "v": 1, "node": {"hostname": "edge-host", "kernel": "6.18", "agent_version": "0.1.0"}}


def agent(token):
    return WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {token}".encode())])


async def hello(ws):
    assert (await ws.connect())[0]
    await ws.send_json_to(HELLO)
    return await ws.receive_json_from(timeout=5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", ["", "wrong", "x" * 500])
async def test_unknown_or_malformed_token_is_refused(node, token):
    connected, _ = await agent(token).connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_revoked_node_is_refused(node):
    await database_sync_to_async(Node.objects.filter(pk=node.pk).update)(revoked=True)
    assert not (await agent(node.token).connect())[0]


@pytest.mark.django_db(transaction=True)
async def test_hello_gets_policy_and_events_get_acked(node):
    await database_sync_to_async(Rule.objects.create)(rule_id="rule-001", action="alert", dest_ip="127.10.10.5/32")
    ws = agent(node.token)
    welcome = await hello(ws)
    assert welcome["type"] == "welcome" and welcome["last_seq"] == 0
    assert [r["id"] for r in welcome["policy"]["rules"]] == ["rule-001"] and welcome["policy"]["version"] >= 1

    await ws.send_json_to({"type": "events", "batch": [agent_event(1), agent_event(2)]})
    ack = await ws.receive_json_from(timeout=5)
    assert (ack["type"], ack["seq"], ack["stored"]) == ("ack", 2, 2)
    assert await database_sync_to_async(ConnectionEvent.objects.count)() == 2
    saved = await database_sync_to_async(Node.objects.get)(pk=node.pk)
    assert (saved.hostname, saved.kernel) == ("edge-host", "6.18")
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_rule_change_is_pushed_to_connected_agents(node):
    ws = agent(node.token)
    welcome = await hello(ws)
    await database_sync_to_async(Rule.objects.create)(rule_id="rule-new", action="deny", dest_port="22")
    pushed = await ws.receive_json_from(timeout=5)
    assert pushed["type"] == "policy" and pushed["version"] > welcome["policy"]["version"]
    assert [r["id"] for r in pushed["rules"]] == ["rule-new"]
    await ws.send_json_to({"type": "policy_ack", "version": pushed["version"], "error": ""})
    await ws.send_json_to({"type": "heartbeat", "health": {"backends": {}}})
    await ws.disconnect()
    saved = await database_sync_to_async(Node.objects.get)(pk=node.pk)
    assert saved.policy_version == pushed["version"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"type": "nonsense"}',
        '{"type": "__init__"}',
        '{"type": "events", "batch": "x"}',
        '{"type": "events", "batch": []}',
        '{"type": "heartbeat", "health": 5}',
        '{"type": "policy_ack", "version": "1"}',
    ],
)
async def test_malformed_messages_are_rejected_and_the_session_goes_on(node, raw):
    ws = agent(node.token)
    await hello(ws)
    await ws.send_to(text_data=raw)
    error = await ws.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["reason"]
    await ws.send_json_to({"type": "events", "batch": [agent_event(1)]})
    assert (await ws.receive_json_from(timeout=5))["stored"] == 1
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_messages_before_hello_are_rejected(node):
    ws = agent(node.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "events", "batch": [agent_event(1)]})
    assert "hello" in (await ws.receive_json_from(timeout=5))["reason"]
    await ws.disconnect()


@pytest.mark.django_db
def test_a_silent_node_is_unknown_within_three_heartbeats(node):
    from datetime import timedelta

    from django.utils import timezone

    from monitor.protocol import HEARTBEAT_SECONDS

    now = timezone.now()
    node.last_seen_at = now - timedelta(seconds=HEARTBEAT_SECONDS)
    assert node.status(now) == "online"
    node.last_seen_at = now - timedelta(seconds=3 * HEARTBEAT_SECONDS + 0.1)
    assert node.status(now) == "unknown"
    node.revoked = True
    assert node.status(now) == "revoked"
