"""Carries the agent's events to the dashboard and its policy back, over one websocket.

Events get a per-node sequence number when they leave the outbox and stay in `unacked`
until the dashboard acks them, so a reconnect resends exactly what was not stored and
the dashboard's (node, seq) uniqueness drops what was. Reconnection and its backoff are
websockets' own (`connect` as an async iterator).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .agent import Agent
from .protocol import HEARTBEAT_SECONDS, MAX_BATCH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION

log = logging.getLogger("crossedge.uplink")


class Refused(RuntimeError):
    """The dashboard will not take this agent (bad or revoked token): retrying cannot help."""


class Uplink:
    def __init__(self, agent: Agent, url: str, token: str, *, window: int = 20 * MAX_BATCH, flush_interval=0.1):
        self.agent, self.url, self.token = agent, url, token
        self.window, self.flush_interval = window, flush_interval
        self.unacked: collections.deque[dict] = collections.deque()
        self.next_seq = 1
        self.connected = asyncio.Event()
        self.stats = collections.Counter()

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async for ws in connect(self.url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES):
                try:
                    await self._session(ws)
                except ConnectionClosed as exc:
                    log.warning("dashboard connection lost (%s); reconnecting", exc)
                finally:
                    self.connected.clear()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise Refused(f"dashboard at {self.url} refused this agent (HTTP {status}): check the node token") from None

    async def _session(self, ws) -> None:
        await ws.send(json.dumps({"type": "hello", "v": PROTOCOL_VERSION, "node": self.agent.identity()}))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise ConnectionClosed(None, None)
        self.next_seq = max(self.next_seq, int(welcome.get("last_seq", 0)) + 1)
        await self._apply_policy(ws, welcome.get("policy") or {})
        log.info("connected to %s as node %s", self.url, welcome.get("node"))
        self.connected.set()
        self.stats["sessions"] += 1
        tasks = [asyncio.create_task(c) for c in (self._send(ws), self._receive(ws), self._heartbeat(ws))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, ws) -> None:
        for i in range(0, len(self.unacked), MAX_BATCH):  # resend what the last session left unacked
            batch = list(self.unacked)[i : i + MAX_BATCH]
            await ws.send(json.dumps({"type": "events", "batch": batch}))
        outbox = self.agent.outbox
        while True:
            if not outbox or len(self.unacked) >= self.window:
                self.agent.wakeup.clear()
                try:
                    await asyncio.wait_for(self.agent.wakeup.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                await asyncio.sleep(self.flush_interval)  # let a batch gather
                continue
            batch = []
            while outbox and len(batch) < MAX_BATCH and len(self.unacked) < self.window:
                event = outbox.popleft()
                event["seq"] = self.next_seq
                self.next_seq += 1
                self.unacked.append(event)
                batch.append(event)
            await ws.send(json.dumps({"type": "events", "batch": batch}))
            self.stats["batches"] += 1

    async def _receive(self, ws) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "ack":
                seq = int(msg["seq"])
                while self.unacked and self.unacked[0]["seq"] <= seq:
                    self.unacked.popleft()
                self.stats["acked_batches"] += 1
                if msg.get("rejected"):
                    self.stats["rejected"] += len(msg["rejected"])
                    log.error("dashboard rejected events: %s", msg["rejected"][:3])
            elif kind == "policy":
                await self._apply_policy(ws, msg)
            elif kind == "error":
                log.error("dashboard: %s", msg.get("reason"))

    async def _apply_policy(self, ws, policy: dict) -> None:
        version = policy.get("version")
        if not isinstance(version, int):
            return
        error = self.agent.set_policy(version, policy.get("rules") or [])
        await ws.send(json.dumps({"type": "policy_ack", "version": version, "error": error}))

    async def _heartbeat(self, ws) -> None:
        while True:
            health = self.agent.health() | {"unacked": len(self.unacked)}
            await ws.send(json.dumps({"type": "heartbeat", "health": health}))
            await asyncio.sleep(HEARTBEAT_SECONDS)
