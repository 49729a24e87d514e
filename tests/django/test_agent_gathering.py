"""The agents' batches of one dashboard process are stored together: those that arrive while
the database thread stores go in one group next (one transaction for all), each agent's
acks still come in the order of its batches, and a batch that cannot be stored closes its
agent's connection (it resends what was not acked) and no other."""

import threading

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from dashboard.events.models import ConnectionEvent
from dashboard.fleet import consumers

from .conftest import agent_event, enrolled
from .test_agent_consumer import agent, hello


@pytest.fixture
def two_nodes(db):
    return [enrolled("edge-1"), enrolled("edge-2")]


@pytest.mark.django_db(transaction=True)
async def test_batches_that_wait_are_stored_in_one_group_and_acked_in_order(two_nodes, monkeypatch):
    real, groups, release = consumers.ingest_batches, [], threading.Event()

    def recording(items):
        groups.append([(node.name, [e["seq"] for e in batch]) for node, batch in items])
        if len(groups) == 1:
            release.wait(10)  # the database thread is busy with the first group meanwhile
        return real(items)

    monkeypatch.setattr(consumers, "ingest_batches", recording)
    one, two = agent(two_nodes[0].token), agent(two_nodes[1].token)
    await hello(one)
    await hello(two)
    await one.send_json_to({"type": "events", "batch": [agent_event(1)]})
    while not groups:  # the database thread has taken the first batch
        await one.receive_nothing(0.02)
    await one.send_json_to({"type": "events", "batch": [agent_event(2), agent_event(3)]})
    await two.send_json_to({"type": "events", "batch": [agent_event(1)]})
    await one.send_json_to({"type": "events", "batch": [agent_event(4)]})
    await two.send_json_to({"type": "events", "batch": [agent_event(2)]})
    await one.receive_nothing(0.3)  # (they arrive, and wait)
    release.set()
    acks_one = [await one.receive_json_from(timeout=5) for _ in range(3)]
    acks_two = [await two.receive_json_from(timeout=5) for _ in range(2)]
    assert [(a["seq"], a["stored"]) for a in acks_one] == [(1, 1), (3, 2), (4, 1)]
    assert [(a["seq"], a["stored"]) for a in acks_two] == [(1, 1), (2, 1)]
    assert groups == [
        [("edge-1", [1])],
        [("edge-1", [2, 3]), ("edge-2", [1]), ("edge-1", [4]), ("edge-2", [2])],
    ]
    assert await database_sync_to_async(ConnectionEvent.objects.count)() == 6
    await one.disconnect()
    await two.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_batch_that_cannot_be_stored_closes_only_its_agents_connection(two_nodes, monkeypatch):
    real = consumers.ingest_batches

    def failing(items):
        results = real([(node, batch) for node, batch in items if node.name != "edge-1"])
        return [OperationalError("the disk is full") if node.name == "edge-1" else results.pop(0)
                for node, _ in items]  # fmt: skip

    monkeypatch.setattr(consumers, "ingest_batches", failing)
    one, two = agent(two_nodes[0].token), agent(two_nodes[1].token)
    await hello(one)
    await hello(two)
    await one.send_json_to({"type": "events", "batch": [agent_event(1)]})
    assert (await one.receive_output(timeout=5)) == {"type": "websocket.close", "code": consumers.CLOSE_FAILED}
    await two.send_json_to({"type": "events", "batch": [agent_event(1)]})
    assert (await two.receive_json_from(timeout=5))["stored"] == 1
    await two.disconnect()
