"""The node agent's pipeline: backend event -> attribution -> verdict -> outbox.

Plain Python: the dashboard is reached only through an uplink that drains `outbox`
and feeds `set_policy`, so the same agent runs against a remote dashboard, the local
one, or a test.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time

from . import AGENT_VERSION
from .backends import BACKENDS
from .cgroups import CgroupIndex
from .containers import DEFAULT_DOCKER_ROOT, identify
from .rules import Flow, RuleError, RuleSet
from .supervisor import Supervisor

log = logging.getLogger("crossedge.agent")
DEFAULT_OUTBOX_CAP = 200_000


class Agent:
    def __init__(
        self,
        backends=("connect",),
        *,
        cgroups: CgroupIndex | None = None,
        docker_roots: tuple[str, ...] = (DEFAULT_DOCKER_ROOT,),
        outbox_cap: int = DEFAULT_OUTBOX_CAP,
    ):
        self.cgroups = cgroups or CgroupIndex()
        self.docker_roots = tuple(docker_roots)
        self.ruleset = RuleSet()
        self.policy_error = ""
        self.outbox: collections.deque[dict] = collections.deque()
        self.outbox_cap = outbox_cap
        self.outbox_dropped = 0
        self.verdicts = collections.Counter()
        self.wakeup = asyncio.Event()
        self.supervisors = [Supervisor(BACKENDS[name], self.handle) for name in backends]
        self.started = time.time()

    # -- events ---------------------------------------------------------------
    def handle(self, backend: str, event: dict) -> None:
        """Attribute and judge one parsed event, then queue it for the uplink."""
        event["kind"] = backend
        event["ts_ns"] = event.pop("mono_ns") + time.time_ns() - time.monotonic_ns()
        path = self.cgroups.path(event["cgroup_id"])
        event["cgroup_path"] = path or ""
        ref = identify(path, self.docker_roots)
        event["container"] = (
            {"runtime": ref.runtime, "id": ref.container_id, "name": ref.name, "pod_uid": ref.pod_uid} if ref else None
        )
        rule = self.ruleset.evaluate(
            Flow.of(
                event["dest_ip"],
                event["dest_port"],
                cgroup_id=event["cgroup_id"],
                cgroup_path=path,
                container=ref.name if ref else None,
            )
        )
        event["verdict"] = rule.action if rule else "allow"
        event["rule_id"] = rule.id if rule else ""
        event["severity"] = rule.severity if rule else ""
        event["policy_version"] = self.ruleset.version
        self.verdicts[event["verdict"]] += 1
        if len(self.outbox) >= self.outbox_cap:
            self.outbox.popleft()
            self.outbox_dropped += 1
        self.outbox.append(event)
        self.wakeup.set()

    # -- policy ---------------------------------------------------------------
    def set_policy(self, version: int, specs: list) -> str:
        """Swap in a new rule set; on a bad one keep the old and return the error."""
        try:
            self.ruleset = RuleSet.from_specs(specs, version)
        except RuleError as exc:
            self.policy_error = f"policy {version} refused, keeping {self.ruleset.version}: {exc}"
            log.error(self.policy_error)
            return self.policy_error
        self.policy_error = ""
        log.info("policy version %d applied (%d rules)", version, len(self.ruleset))
        return ""

    # -- health ---------------------------------------------------------------
    def identity(self) -> dict:
        return {
            "hostname": socket.gethostname(),
            "kernel": os.uname().release,
            "agent_version": AGENT_VERSION,
            "backends": [s.backend.name for s in self.supervisors],
        }

    def health(self) -> dict:
        return {
            "backends": {s.backend.name: s.health.as_dict() for s in self.supervisors},
            "outbox": len(self.outbox),
            "outbox_dropped": self.outbox_dropped,
            "verdicts": dict(self.verdicts),
            "policy_version": self.ruleset.version,
            "policy_error": self.policy_error,
            "uptime": round(time.time() - self.started, 1),
        }

    # -- lifecycle ------------------------------------------------------------
    async def wait_ready(self, timeout: float) -> None:
        """Until every backend has attached its probes."""
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in self.supervisors)), timeout)

    async def run(self, *tasks) -> None:
        """Run the backends (and the given uplink coroutines) until cancelled."""
        runners = [asyncio.create_task(s.run()) for s in self.supervisors]
        runners += [asyncio.create_task(t) for t in tasks]
        try:
            await asyncio.gather(*runners)
        finally:
            await asyncio.gather(*(s.stop() for s in self.supervisors), return_exceptions=True)
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
