"""Carries the agent's events to the dashboard and its policy back, over one websocket.

Events go from the agent's outbox into the durable spool (monitor.spool) whether or not
the dashboard is reachable; the sender streams the spool from the last acknowledged
number, so a reconnect, or a restart of either side, resends exactly what was not
stored, and the dashboard's (node, seq) uniqueness drops what was. Reconnection and its
backoff are websockets' own (`connect` as an async iterator), capped at 10 s.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging

from websockets.asyncio.client import connect
from websockets.client import backoff
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .agent import Agent
from .protocol import HEARTBEAT_SECONDS, MAX_BATCH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from .spool import Spool

log = logging.getLogger("crossedge.uplink")
PUMP_BATCH = 5000
MAX_RECONNECT_DELAY = 10.0


class Refused(RuntimeError):
    """The dashboard will not take this agent (bad or revoked token): retrying cannot help."""


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until the event is set or the timeout passes (the waiter is cancelled, never left behind)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass


def reconnect_delays():
    return backoff(initial_delay=1.0, min_delay=1.0, max_delay=MAX_RECONNECT_DELAY)


class Uplink:
    def __init__(
        self,
        agent: Agent,
        url: str,
        token: str,
        *,
        spool: Spool | None = None,
        window: int = 20 * MAX_BATCH,
        flush_interval: float = 0.05,
    ):
        self.agent, self.url, self.token = agent, url, token
        self.spool = spool or Spool()
        self.window, self.flush_interval = window, flush_interval
        self.acked = 0  # highest number the dashboard has acknowledged
        self.sent = 0  # highest number sent in this session
        self.spooled = asyncio.Event()
        self.ack_received = asyncio.Event()
        self.connected = asyncio.Event()
        self.stats = collections.Counter()

    async def run(self) -> None:
        pump = asyncio.create_task(self._pump())
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async for ws in connect(
                self.url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES, reconnect_delays=reconnect_delays
            ):
                try:
                    await self._session(ws)
                except ConnectionClosed as exc:
                    log.warning("dashboard connection lost (%s); reconnecting", exc)
                finally:
                    self.connected.clear()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise Refused(f"dashboard at {self.url} refused this agent (HTTP {status}): check the node token") from None
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self.flush_outbox()

    # -- outbox -> spool, connected or not ----------------------------------------
    async def _pump(self) -> None:
        outbox = self.agent.outbox
        while True:
            if not outbox:
                self.agent.wakeup.clear()
                await _wait(self.agent.wakeup, 1.0)
                await asyncio.sleep(self.flush_interval)  # let a batch gather
                continue
            batch = [outbox.popleft() for _ in range(min(len(outbox), PUMP_BATCH))]
            await asyncio.to_thread(self.spool.append, batch)
            self.spooled.set()

    def flush_outbox(self) -> None:
        """Spool whatever the agent still holds (on the way out: nothing is left in memory)."""
        batch = list(self.agent.outbox)
        self.agent.outbox.clear()
        self.spool.append(batch)

    # -- one connection -----------------------------------------------------------
    async def _session(self, ws) -> None:
        await ws.send(json.dumps({"type": "hello", "v": PROTOCOL_VERSION, "node": self.agent.identity()}))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise ConnectionClosed(None, None)
        last_stored = int(welcome.get("last_seq", 0))
        await asyncio.to_thread(self.spool.welcome, last_stored)
        self.acked = self.sent = last_stored
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
        while True:
            if self.sent - self.acked >= self.window:
                self.ack_received.clear()
                await _wait(self.ack_received, 1.0)
                continue
            self.spooled.clear()
            batch = await asyncio.to_thread(self.spool.read, self.sent, MAX_BATCH)
            if not batch:
                await _wait(self.spooled, 1.0)
                continue
            await ws.send(json.dumps({"type": "events", "batch": batch}))
            self.sent = batch[-1]["seq"]
            self.stats["batches"] += 1

    async def _receive(self, ws) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "ack":
                seq = int(msg["seq"])
                await asyncio.to_thread(self.spool.ack, seq)
                self.acked = max(self.acked, seq)
                self.ack_received.set()
                self.stats["acked_batches"] += 1
                if msg.get("rejected"):
                    self.stats["rejected"] += len(msg["rejected"])
                    log.error("dashboard rejected events: %s", msg["rejected"][:3])
            elif kind == "policy":
                await self._apply_policy(ws, msg)
            elif kind == "error":
                self.stats["errors"] += 1
                log.error("dashboard: %s", msg.get("reason"))

    async def _apply_policy(self, ws, policy: dict) -> None:
        version = policy.get("version")
        if not isinstance(version, int):
            return
        error = self.agent.set_policy(version, policy.get("rules") or [])
        await ws.send(json.dumps({"type": "policy_ack", "version": version, "error": error}))

    async def health(self) -> dict:
        depth, dropped = await asyncio.to_thread(lambda: (self.spool.depth, self.spool.dropped))
        return self.agent.health() | {
            "spool": depth,
            "spool_dropped": dropped,
            "unacked": max(0, self.sent - self.acked),
            "rejected": self.stats["rejected"],
        }

    async def _heartbeat(self, ws) -> None:
        while True:
            await ws.send(json.dumps({"type": "heartbeat", "health": await self.health()}))
            await asyncio.sleep(HEARTBEAT_SECONDS)
