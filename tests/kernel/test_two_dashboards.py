"""At scale, two daphne processes share PostgreSQL and Redis: a browser feed open on one
receives what an agent sends to the other (the Redis channel layer carries it)."""

import asyncio
import json
import os
import time

import pytest
from websockets.asyncio.client import connect

from tests.django.conftest import agent_event
from tests.fleet import login_cookie

from .test_multinode import Stack, free_port

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(120)
def test_a_feed_on_one_daphne_sees_events_sent_to_another(kernel, tmp_path):
    db, redis = os.environ.get("CROSSEDGE_TEST_DATABASE_URL"), os.environ.get("CROSSEDGE_TEST_REDIS_URL")
    if not (db and redis):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "CROSSEDGE_TEST_DATABASE_URL and CROSSEDGE_TEST_REDIS_URL are needed in CI (make test sets them)"
            )
        pytest.skip("PostgreSQL and Redis not set up (make test starts them)")
    password = "pw-two-123"
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis, "CROSSEDGE_VAR_DIR": str(tmp_path),
           "CROSSEDGE_ADMIN_PASSWORD": password}  # fmt: skip
    a, b = Stack(env, free_port()), Stack(env, free_port())
    a.manage("migrate", "--noinput")
    a.manage("flush", "--noinput")
    a.manage("ensureadmin")
    token = a.manage("enrol", "edge-two")
    try:
        a.start()
        b.start()
        cookie = login_cookie(a.base, "admin", password)

        async def scenario():
            feed_url = f"ws://127.0.0.1:{a.port}/ws/feed/connections/"
            headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{a.port}"}
            async with connect(feed_url, additional_headers=headers) as feed:
                assert json.loads(await feed.recv())["type"] == "backfill"
                agent_url = f"ws://127.0.0.1:{b.port}/ws/agent/"
                async with connect(agent_url, additional_headers={"Authorization": f"Bearer {token}"}) as agent:
                    await agent.send(json.dumps({"type": "hello", "v": 1, "node": {"hostname": "two"}}))
                    welcome = json.loads(await agent.recv())
                    assert welcome["type"] == "welcome"
                    await agent.send(json.dumps({"type": "events", "batch": [agent_event(1, comm="via-b")]}))
                    assert json.loads(await agent.recv())["stored"] == 1
                    started = time.monotonic()
                    while True:
                        msg = json.loads(await asyncio.wait_for(feed.recv(), 5))
                        if msg["type"] == "rows" and any(r["comm"] == "via-b" for r in msg["rows"]):
                            return time.monotonic() - started

        assert asyncio.run(scenario()) < 2.0
    finally:
        for stack in (a, b):
            if stack.proc and stack.proc.poll() is None:
                stack.proc.terminate()
                stack.proc.wait()
