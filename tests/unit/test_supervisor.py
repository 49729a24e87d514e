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


async def test_a_huge_stderr_line_is_counted_and_the_backend_keeps_running():
    """A stderr line over the 1 MiB line limit used to end the supervisor's run with an
    uncaught error; now it is dropped, counted, and the data lines after it still arrive."""
    script = (
        "import sys, time; sys.stderr.write('x' * (3 << 20) + '\\n'); sys.stderr.write('after\\n')\n"
        "sys.stderr.flush()\n"
        'print(\'{"type": "attached_probes", "data": {"probes": 2}}\', flush=True); time.sleep(30)'
    )
    backend = dataclasses.replace(BACKENDS["connect"], program="python3", command=lambda exe: [exe, "-c", script])
    sup = Supervisor(backend, lambda *_: None, min_backoff=0.01, max_backoff=0.02)
    runner = asyncio.create_task(sup.run())
    for _ in range(100):
        if sup.health.attached_probes and sup._last_stderr:
            break
        await asyncio.sleep(0.05)
    try:
        assert sup.health.stderr_dropped >= 1 and sup._last_stderr == "after"  # counted per 1 MiB read
        assert sup.health.attached_probes == 2 and sup.health.state == "running" and sup.health.restarts == 0
        assert not runner.done()
    finally:
        await sup.stop()
        await asyncio.gather(runner, return_exceptions=True)
