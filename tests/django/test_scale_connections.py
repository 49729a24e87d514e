"""At scale (PostgreSQL and Redis, two daphne processes, as README "Many nodes" runs them),
agents and browser feeds stay connected under steady load: a minute of events from agents
on both processes, no connection closed by the dashboard, no exception in daphne's log,
every event stored once, and the feeds still showing rows from both processes at the end.

Every consumer, browser feeds included, runs the channel layer's receive loop, one blocking
read (BZPOPMIN, 5 s) at a time for all the consumers of a process. With channels-redis
4.3.0 over redis-py 8, whose default 5 s socket timeout cuts that read, a process whose
consumers got no channel message for 5 s lost one to `TimeoutError` every few seconds and
daphne closed its socket with 1011 (issue 32); agents reconnected and resent from their
spool, which hid it. So one process here serves browsers and agents (its feeds get rows
all the time), the other agents and a feed that gets none (processes: no process events),
as a process that only takes agents' batches does; and these agents never reconnect.
"""

import asyncio
import os

import pytest

from tests.fleet import ADMIN_PASSWORD, Dashboard, FeedWatch, SimAgent, login_cookie

AGENTS = 6  # three on each daphne
RATE = 50  # events a second, each agent (every 10th an alert: the violations feed gets rows too)
SECONDS = 60


@pytest.fixture
def redis_url():
    url = os.environ.get("CROSSEDGE_TEST_REDIS_URL")
    if not url:
        message = "CROSSEDGE_TEST_REDIS_URL not set (make test starts Redis)"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    return url


@pytest.mark.timeout(SECONDS + 180)
def test_agents_and_feeds_stay_connected_for_a_minute_under_load(postgres, redis_url, tmp_path):
    dashboard = Dashboard({"DATABASE_URL": postgres.env["DATABASE_URL"], "REDIS_URL": redis_url}, tmp_path, 2)
    dashboard.manage("ensureadmin")
    names = [f"edge-soak-{i}" for i in range(AGENTS)]
    tokens = dashboard.enrol(names)
    a, b = dashboard.bases
    agents = [SimAgent((a, b)[i % 2], name, tokens[name], RATE, i) for i, name in enumerate(names)]
    try:
        dashboard.start()
        cookie = login_cookie(a, "admin", ADMIN_PASSWORD)
        feeds = [FeedWatch(a, cookie, "connections"), FeedWatch(a, cookie, "violations")]
        quiet = FeedWatch(b, cookie, "processes")

        async def run():
            stop = asyncio.Event()
            watching = [asyncio.create_task(f.run(stop)) for f in [*feeds, quiet]]
            await asyncio.wait_for(asyncio.gather(*(f.ready.wait() for f in [*feeds, quiet])), 30)
            started = asyncio.get_running_loop().time()
            await asyncio.gather(*(agent.run(SECONDS) for agent in agents))
            stop.set()
            await asyncio.gather(*watching)
            return started

        started = asyncio.run(run())
    finally:
        dashboard.stop()

    failures = "\n".join(dashboard.failures()[:40])
    closed = {agent.name: agent.closed for agent in agents if agent.closed}
    assert not closed, f"the dashboard closed agents' connections (code, reason, after s): {closed}\n{failures}"
    closed = {f.feed: f.closed for f in [*feeds, quiet] if f.closed}
    assert not closed, f"the dashboard closed browser feeds: {closed}\n{failures}"
    assert not failures, f"daphne logged failures:\n{failures}"
    for agent in agents:
        assert agent.made >= RATE * SECONDS * 0.95, (agent.name, agent.made)
        assert (agent.acked, agent.stored, agent.errors) == (agent.made, agent.made, []), agent.name
    stored = dashboard.stored(names)
    assert stored == {agent.name: (agent.made, agent.made) for agent in agents}, "every event stored once"
    for feed, wanted in zip(feeds, (1, 10), strict=True):  # violations: every 10th event
        # rows from the agents of both processes (the Redis layer carries them across)...
        assert set(feed.rows) == set(names), (feed.feed, feed.rows)
        for agent in agents:
            assert feed.rows[agent.name] >= agent.made // wanted * 0.9, (feed.feed, agent.name, feed.rows)
        # ...until the end of the load, not only at first
        assert max(feed.arrivals) > started + SECONDS - 5, f"the {feed.feed} feed went quiet"
