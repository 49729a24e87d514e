"""Malformed agent messages: each kind gets a clear rejection (and is counted on its node),
none crashes the consumer or poisons its batch, and a well-behaved agent on the same
dashboard keeps streaming throughout."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from dashboard.asgi import application
from dashboard.events.models import ConnectionEvent
from dashboard.fleet.models import Node
from monitor.protocol import MAX_BATCH, MAX_MESSAGE_BYTES

from .conftest import agent_event

HELLO = {"type": "hello", "v": 1, "node": {"hostname": "h", "kernel": "6.18", "agent_version": "0.1.0"}}


def agent(token):
    return WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {token}".encode())])


def events(*batch):
    return json.dumps({"type": "events", "batch": list(batch)})


# (what is wrong, the frame, a word the error must contain)
ERRORS = [
    ("binary frame", b"\x00\x01", "binary"),
    ("not JSON", "{nope", "not JSON"),
    ("JSON array", "[1, 2]", "JSON object"),
    ("no type", '{"batch": []}', "unknown message type"),
    ("unknown type", '{"type": "shutdown"}', "unknown message type"),
    ("type not a string", '{"type": 7}', "unknown message type"),
    ("dunder type", '{"type": "__init__"}', "unknown message type"),
    ("second hello, wrong version", json.dumps(HELLO | {"v": 99}), "protocol version 99"),
    ("hello node not an object", json.dumps(HELLO | {"node": "me"}), "hello.node"),
    ("hello hostname too long", json.dumps(HELLO | {"node": {"hostname": "h" * 300}}), "hostname"),
    ("batch not a list", '{"type": "events", "batch": {"a": 1}}', "events.batch"),
    ("empty batch", events(), "1 to 1000"),
    ("batch too big", events(*[agent_event(1)] * (MAX_BATCH + 1)), "1 to 1000"),
    ("heartbeat health not an object", '{"type": "heartbeat", "health": [1]}', "heartbeat.health"),
    ("heartbeat too big", json.dumps({"type": "heartbeat", "health": {"x": "y" * 70000}}), "over"),
    ("policy_ack version a string", '{"type": "policy_ack", "version": "3", "error": ""}', "policy_ack.version"),
    ("policy_ack version a bool", '{"type": "policy_ack", "version": true, "error": ""}', "policy_ack.version"),
    ("oversized message", "x" * (MAX_MESSAGE_BYTES + 1), "over the"),
    ("deeply nested JSON", "[" * 100_000 + "]" * 100_000, "not JSON"),
    ("NaN where a number goes", '{"type": "policy_ack", "version": NaN, "error": ""}', "policy_ack.version"),
]
# events that are individually refused inside an otherwise good batch
BAD_EVENTS = [
    ("pid as a string", {"pid": "42"}, "pid"),
    ("address that is not one", {"dest_ip": "127.0.0.300"}, "dest_ip"),
    ("family that does not match", {"family": 6}, "dest_ip"),
    ("unknown verdict", {"verdict": "maybe"}, "verdict"),
    ("huge integer", {"cgroup_id": 2**80}, "cgroup_id"),
    ("container not an object", {"container": "prod"}, "container"),
    ("enforced not a bool", {"enforced": "yes"}, "enforced"),
]


@pytest.mark.django_db(transaction=True)
async def test_every_malformed_message_is_refused_while_a_good_agent_streams(node):
    good_node = Node(name="edge-good")
    good_token = good_node.issue_token()
    await database_sync_to_async(good_node.save)()
    good, bad = agent(good_token), agent(node.token)
    for ws in (good, bad):
        assert (await ws.connect())[0]
        await ws.send_json_to(HELLO)
        assert (await ws.receive_json_from(timeout=5))["type"] == "welcome"

    seq = 0
    for what, frame, word in ERRORS:
        if isinstance(frame, bytes):
            await bad.send_to(bytes_data=frame)
        else:
            await bad.send_to(text_data=frame)
        reply = await bad.receive_json_from(timeout=10)
        assert reply["type"] == "error" and word in reply["reason"], (what, reply)
        seq += 1
        await good.send_to(text_data=events(agent_event(seq)))
        assert (await good.receive_json_from(timeout=5))["stored"] == 1, what

    base = 1000
    batch = [agent_event(base + i, **change) for i, (_, change, _) in enumerate(BAD_EVENTS)]
    batch.append(agent_event(base + len(BAD_EVENTS)))  # one good event rides along
    await bad.send_to(text_data=events(*batch))
    ack = await bad.receive_json_from(timeout=5)
    assert ack["stored"] == 1 and ack["seq"] == base + len(BAD_EVENTS)
    reasons = [r["reason"] for r in ack["rejected"]]
    for (what, _, word), reason in zip(BAD_EVENTS, reasons, strict=True):
        assert word in reason, (what, reason)

    await bad.send_to(text_data=events(*batch[-1:]))  # a replayed sequence number
    replay = await bad.receive_json_from(timeout=5)
    assert (replay["stored"], replay["duplicates"]) == (0, 1)

    saved = await database_sync_to_async(Node.objects.get)(pk=node.pk)
    assert saved.rejected_messages == len(ERRORS) and saved.last_rejection
    assert await database_sync_to_async(ConnectionEvent.objects.filter(node=good_node).count)() == len(ERRORS)
    assert await database_sync_to_async(ConnectionEvent.objects.filter(node=node).count)() == 1
    for ws in (good, bad):
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", ["", "wrong", "x" * 500, "Bearer-less"])
async def test_wrong_tokens_are_refused_at_the_handshake(node, token):
    assert not (await agent(token).connect())[0]


@pytest.mark.django_db(transaction=True)
async def test_revoking_a_node_cuts_its_connection_at_once(node):
    ws = agent(node.token)
    assert (await ws.connect())[0]
    await ws.send_json_to(HELLO)
    await ws.receive_json_from(timeout=5)

    def revoke():
        fresh = Node.objects.get(pk=node.pk)
        fresh.revoked = True
        fresh.save()

    await database_sync_to_async(revoke)()
    closed = await ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}
    assert not (await agent(node.token).connect())[0]


@pytest.mark.django_db(transaction=True)
async def test_an_agent_that_keeps_sending_garbage_is_cut_off(node):
    ws = agent(node.token)
    assert (await ws.connect())[0]
    await ws.send_json_to(HELLO)
    await ws.receive_json_from(timeout=5)
    for _ in range(100):
        await ws.send_to(text_data="garbage")
        await ws.receive_json_from(timeout=5)
    assert (await ws.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4400}
