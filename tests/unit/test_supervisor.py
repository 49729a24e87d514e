"""Supervision failures that need no kernel: a missing program is a clear, retried error."""

import asyncio
import dataclasses

from monitor.backends import BACKENDS
from monitor.supervisor import Supervisor


async def test_missing_program_is_reported_and_retried():
    backend = dataclasses.replace(BACKENDS["connect"], program="no-such-bpftrace")
    sup = Supervisor(backend, lambda *_: None, min_backoff=0.01, max_backoff=0.02)
    runner = asyncio.create_task(sup.run())
    await asyncio.sleep(0.2)
    await sup.stop()
    await asyncio.gather(runner, return_exceptions=True)
    assert "no-such-bpftrace not found on PATH" in sup.health.last_error
    assert "apt-get install bpftrace" in sup.health.last_error
    assert sup.health.restarts >= 3 and sup.health.events == 0
