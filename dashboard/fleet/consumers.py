"""The agent end of the agent <-> dashboard protocol (see monitor/protocol.py)."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection
from django.db.models import F
from django.utils import timezone

from dashboard.events.ingest import IngestResult, ingest_batches
from dashboard.policy.distribution import AGENTS_GROUP, current_policy
from dashboard.policy.models import PolicyState
from monitor.features import FEATURES
from monitor.protocol import MAX_HEALTH_BYTES, MAX_MESSAGE_BYTES, MessageError, check_message

from .models import Node

log = logging.getLogger("crossedge.agents")
MAX_REJECTIONS = 100  # per session: past this the agent is cut off (close code 4400)
CLOSE_REVOKED = 4403
CLOSE_TOO_MANY_ERRORS = 4400
CLOSE_FAILED = 1011  # a batch could not be stored (the database is down, say)


# The agents' database work (batches, heartbeats) runs on one thread whose connection stays
# open. Django advises CONN_MAX_AGE 0 under ASGI, where each request has a thread of its own;
# on SQLite that made every batch open a connection (and read the schema) and close it: more
# CPU than storing the batch (~3 of ~5 ms). One thread, one connection: dropped after an
# error, and on other databases when older than CONN_MAX_AGE. (A second thread on PostgreSQL
# stored less, not more: each took half of what waited, and the cost is per group.)
AGENTS_DB = ThreadPoolExecutor(1, thread_name_prefix="agents-db")


def agents_db(fn):
    """fn, awaitable, run on the agents' database thread."""

    @functools.wraps(fn)
    def kept(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            if connection.errors_occurred or connection.vendor != "sqlite":
                connection.close_if_unusable_or_obsolete()

    return sync_to_async(kept, thread_sensitive=False, executor=AGENTS_DB)


class Gathered:
    """This process's agents' batches, stored together. A batch that finds the database
    thread idle goes at once; those that arrive while it stores go together next, up to
    GROUP_EVENTS events (dashboard/events/ingest.py: one transaction, one insert per table,
    one publish per feed). So the cost per batch falls as agents are added, and the
    latency of a lone batch does not grow. One per event loop (tests run several)."""

    GROUP_EVENTS = 10_000

    def __init__(self):
        self.waiting: collections.deque[tuple[Node, list, asyncio.Future]] = collections.deque()
        self.storing: asyncio.Task | None = None  # (the loop keeps only weak references to tasks)

    def submit(self, node: Node, batch: list) -> asyncio.Future[IngestResult]:
        """The batch's result (or what kept it from being stored), once stored. Batches are
        stored in the order they are submitted."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((node, batch, future))
        if self.storing is None:
            self.storing = asyncio.create_task(self._store())
        return future

    async def _store(self) -> None:
        try:
            await self._drain()
        finally:  # (no await between the last look at `waiting` and this: nothing is left behind)
            self.storing = None

    async def _drain(self) -> None:
        while self.waiting:
            group, events = [], 0
            while self.waiting and (not group or events + len(self.waiting[0][1]) <= self.GROUP_EVENTS):
                group.append(self.waiting.popleft())
                events += len(group[-1][1])
            try:
                results = await agents_db(ingest_batches)([(node, batch) for node, batch, _ in group])
            except Exception as exc:  # noqa: BLE001 (each waiting consumer raises it, as it would alone)
                results = [exc] * len(group)
            for (_, _, future), result in zip(group, results, strict=True):
                if future.done():  # its agent went away meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_gathered: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gathered] = weakref.WeakKeyDictionary()


def gathered() -> Gathered:
    loop = asyncio.get_running_loop()
    if loop not in _gathered:
        _gathered[loop] = Gathered()
    return _gathered[loop]


def probe_report(raw) -> dict:
    """The agent's feature probe, reduced to known names and plain values (it is agent data)."""
    if not isinstance(raw, dict):
        return {}
    flags = raw.get("features") if isinstance(raw.get("features"), dict) else {}
    tools = raw.get("tools") if isinstance(raw.get("tools"), dict) else {}
    return {
        "features": {name: flags[name] for name in FEATURES if isinstance(flags.get(name), bool)},
        "tools": {name: str(tools[name])[:32] for name in ("bpftool", "bpftrace") if name in tools},
    }


def node_group(pk: int) -> str:
    return f"node-{pk}"


def bearer_token(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


class AgentConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:  # (a server that stops cancels the consumer without a disconnect: its acker goes too)
            if getattr(self, "acker", None):
                self.acker.cancel()

    async def connect(self):
        self.node = await agents_db(Node.authenticate)(bearer_token(self.scope))
        if self.node is None:
            client = self.scope.get("client") or ["?"]
            log.warning("agent from %s refused: unknown, revoked or malformed token", client[0])
            await self.close()  # before accept: the handshake fails with HTTP 403
            return
        self.hello = False
        self.pushed_version = None
        self.rejections = 0
        # Batches are acked in the order they came, as each is stored; the next message is read
        # meanwhile, so an agent's batches that wait go into one group with every other's.
        self.stored: asyncio.Queue[asyncio.Future] = asyncio.Queue()
        self.acker = asyncio.create_task(self._ack())
        await self.channel_layer.group_add(AGENTS_GROUP, self.channel_name)
        await self.channel_layer.group_add(node_group(self.node.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "acker", None):
            self.acker.cancel()
        if getattr(self, "node", None):
            await self.channel_layer.group_discard(AGENTS_GROUP, self.channel_name)
            await self.channel_layer.group_discard(node_group(self.node.pk), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.reject("binary frames are not part of the protocol: send JSON text")
        if len(text_data) > MAX_MESSAGE_BYTES:
            return await self.reject(f"message of {len(text_data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
        try:
            msg = json.loads(text_data)
            kind = check_message(msg)
        except (ValueError, RecursionError) as exc:  # MessageError is a ValueError, as are JSON errors
            reason = str(exc) if isinstance(exc, MessageError) else f"not JSON: {str(exc)[:200] or 'too deeply nested'}"
            return await self.reject(reason)
        if kind != "hello" and not self.hello:
            return await self.reject("say hello first")
        await getattr(self, f"on_{kind}")(msg)

    async def reject(self, reason: str):
        """Answer with the reason, count it on the node, and cut off an agent that keeps at it."""
        self.rejections += 1
        log.warning("node %s: message rejected: %s", self.node, reason)
        await agents_db(Node.objects.filter(pk=self.node.pk).update)(
            rejected_messages=F("rejected_messages") + 1, last_rejection=reason[:500]
        )
        await self.send(json.dumps({"type": "error", "reason": reason}))
        if self.rejections >= MAX_REJECTIONS:
            log.error("node %s: %d messages rejected in one session; disconnecting it", self.node, self.rejections)
            await self.close(code=CLOSE_TOO_MANY_ERRORS)

    async def node_revoked(self, message):
        """Group message: an admin revoked this node; it is cut off now, not at its next connect."""
        log.warning("node %s revoked: closing its connection", self.node)
        await self.close(code=CLOSE_REVOKED)

    async def on_hello(self, msg):
        self.hello = True
        last_seq = await agents_db(self._save_hello)(msg["node"])
        policy = await agents_db(current_policy)()
        self.pushed_version = policy["version"]
        await self.send(json.dumps({"type": "welcome", "node": self.node.name, "last_seq": last_seq, "policy": policy}))

    def _save_hello(self, info: dict) -> int:
        node = Node.objects.get(pk=self.node.pk)
        node.hostname = str(info.get("hostname", ""))[:255]
        node.kernel = str(info.get("kernel", ""))[:255]
        node.agent_version = str(info.get("agent_version", ""))[:50]
        node.features = probe_report(info.get("features"))
        node.last_seen_at = timezone.now()
        node.save(update_fields=["hostname", "kernel", "agent_version", "features", "last_seen_at"])
        self.node = node
        return node.last_seq

    async def on_events(self, msg):
        self.stored.put_nowait(gathered().submit(self.node, msg["batch"]))

    async def _ack(self):
        while True:
            stored = await self.stored.get()
            try:
                result = await stored
            except Exception:
                log.exception("node %s: a batch could not be stored; closing the connection", self.node)
                await self.close(code=CLOSE_FAILED)  # the agent resends what was not acked
                return
            ack = {"type": "ack", "seq": result.processed_seq, "stored": result.stored,
                   "duplicates": result.duplicates, "rejected": result.rejected}  # fmt: skip
            await self.send(json.dumps(ack))

    async def on_heartbeat(self, msg):
        health = msg["health"]
        if len(json.dumps(health)) > MAX_HEALTH_BYTES:
            return await self.reject(f"heartbeat.health is over {MAX_HEALTH_BYTES} bytes")
        version = await agents_db(self._beat)(health)
        if version != self.pushed_version:  # changed by another process (e.g. `policy import`)
            await self.policy_changed({})

    def _beat(self, health: dict) -> int:
        Node.objects.filter(pk=self.node.pk).update(health=health, last_seen_at=timezone.now())
        return PolicyState.current()

    async def on_policy_ack(self, msg):
        version, error = msg["version"], msg["error"]
        await agents_db(Node.objects.filter(pk=self.node.pk).update)(policy_version=version, policy_error=error[:2000])

    async def policy_changed(self, message):
        """Group message: a rule changed; push the whole current policy."""
        if message.get("version") is not None and message["version"] == self.pushed_version:
            return
        policy = await agents_db(current_policy)()
        self.pushed_version = policy["version"]
        await self.send(json.dumps(policy))
