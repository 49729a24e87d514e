"""A policy write that fails is written again until the kernel holds it (issue 16): the
failure is shown meanwhile, and no new policy or container change is needed to converge."""

import asyncio

import pytest

from monitor.agent import Agent
from monitor.kernel import bpftool

from .conftest import EPERM, connect_from
from .test_enforce_agent import POLICY, stop

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]


async def test_a_failed_policy_write_is_retried_until_the_kernel_holds_it(enforcement, targets, tmp_path, monkeypatch):
    app = enforcement.container("edge-app-prod")
    real_batch, failures = bpftool.batch, []

    def flaky_batch(commands):
        if any("/maps/rules4 " in c or "/maps/pconfig " in c for c in commands) and len(failures) < 2:  # policy writes
            failures.append(commands)
            real_batch(commands[: len(commands) // 2])  # part of it lands, as when bpftool dies midway
            raise bpftool.BpftoolError("bpftool batch file -", "simulated failure midway")
        real_batch(commands)

    monkeypatch.setattr(bpftool, "batch", flaky_batch)
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(3, POLICY[:1])
    runner = asyncio.create_task(agent.run())
    seen_error = ""
    try:
        for _ in range(100):
            seen_error = seen_error or agent.health().get("kernel", {}).get("error", "")
            if agent.kernel_ready.is_set():
                break
            await asyncio.sleep(0.1)
        health = agent.health()["kernel"]
        result = await asyncio.to_thread(connect_from, app, "127.10.10.5", targets.port)
    finally:
        await stop(runner)
    assert len(failures) == 2 and "simulated failure midway" in seen_error
    assert health["policy_version"] == 3 and health["error"] == ""
    assert result == EPERM
