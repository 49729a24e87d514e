"""The supervisor keeps a real bpftrace backend running."""

import asyncio
import os
import signal

import pytest

from monitor.backends import BACKENDS
from monitor.supervisor import Supervisor

pytestmark = pytest.mark.kernel


async def test_killed_backend_is_restarted_with_backoff(kernel):
    sup = Supervisor(BACKENDS["connect"], lambda *_: None, min_backoff=0.2)
    runner = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.ready.wait(), 30)
        first = sup.health.pid
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.1)
        await asyncio.wait_for(sup.ready.wait(), 30)
        assert sup.health.restarts == 1 and sup.health.pid not in (None, first)
        assert sup.health.state == "running" and "status -9" in sup.health.last_error
    finally:
        await sup.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert sup.health.pid is None or not os.path.exists(f"/proc/{sup.health.pid}")
