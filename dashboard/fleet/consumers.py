"""The agent end of the agent <-> dashboard protocol (see monitor/protocol.py)."""

from __future__ import annotations

import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from dashboard.events.ingest import ingest_batch
from dashboard.policy.distribution import AGENTS_GROUP, current_policy
from dashboard.policy.models import PolicyState
from monitor.protocol import MAX_BATCH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION

from .models import Node

log = logging.getLogger("crossedge.agents")


def bearer_token(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


class AgentConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.node = await database_sync_to_async(Node.authenticate)(bearer_token(self.scope))
        if self.node is None:
            client = self.scope.get("client") or ["?"]
            log.warning("agent from %s refused: unknown, revoked or malformed token", client[0])
            await self.close()  # before accept: the handshake fails with HTTP 403
            return
        self.hello = False
        self.pushed_version = None
        await self.channel_layer.group_add(AGENTS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "node", None):
            await self.channel_layer.group_discard(AGENTS_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
            return await self.reject("message must be JSON text under the size limit")
        try:
            msg = json.loads(text_data)
        except ValueError as exc:
            return await self.reject(f"not JSON: {exc}")
        kind = msg.get("type") if isinstance(msg, dict) else None
        handler = getattr(self, f"on_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
        if handler is None:
            return await self.reject(f"unknown message type {kind!r}")
        if kind != "hello" and not self.hello:
            return await self.reject("say hello first")
        await handler(msg)

    async def reject(self, reason: str):
        log.warning("node %s: message rejected: %s", self.node, reason)
        await self.send(json.dumps({"type": "error", "reason": reason}))

    async def on_hello(self, msg):
        if msg.get("v") != PROTOCOL_VERSION or not isinstance(msg.get("node"), dict):
            return await self.reject(f"hello needs v={PROTOCOL_VERSION} and a node object")
        self.hello = True
        last_seq = await database_sync_to_async(self._save_hello)(msg["node"])
        policy = await database_sync_to_async(current_policy)()
        self.pushed_version = policy["version"]
        await self.send(json.dumps({"type": "welcome", "node": self.node.name, "last_seq": last_seq, "policy": policy}))

    def _save_hello(self, info: dict) -> int:
        node = Node.objects.get(pk=self.node.pk)
        node.hostname = str(info.get("hostname", ""))[:255]
        node.kernel = str(info.get("kernel", ""))[:255]
        node.agent_version = str(info.get("agent_version", ""))[:50]
        node.last_seen_at = timezone.now()
        node.save(update_fields=["hostname", "kernel", "agent_version", "last_seen_at"])
        self.node = node
        return node.last_seq

    async def on_events(self, msg):
        batch = msg.get("batch")
        if not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH:
            return await self.reject(f"events.batch must be a list of 1..{MAX_BATCH} events")
        result = await database_sync_to_async(ingest_batch)(self.node, batch)
        await self.send(
            json.dumps(
                {
                    "type": "ack",
                    "seq": result.processed_seq,
                    "stored": result.stored,
                    "duplicates": result.duplicates,
                    "rejected": result.rejected,
                }
            )
        )

    async def on_heartbeat(self, msg):
        health = msg.get("health")
        if not isinstance(health, dict):
            return await self.reject("heartbeat.health must be an object")
        version = await database_sync_to_async(self._beat)(health)
        if version != self.pushed_version:  # changed by another process (e.g. `policy import`)
            await self.policy_changed({})

    def _beat(self, health: dict) -> int:
        Node.objects.filter(pk=self.node.pk).update(health=health, last_seen_at=timezone.now())
        return PolicyState.current()

    async def on_policy_ack(self, msg):
        version, error = msg.get("version"), msg.get("error") or ""
        if not isinstance(version, int) or not isinstance(error, str):
            return await self.reject("policy_ack needs an integer version and a string error")
        await database_sync_to_async(Node.objects.filter(pk=self.node.pk).update)(
            policy_version=version, policy_error=error[:2000]
        )

    async def policy_changed(self, message):
        """Group message: a rule changed; push the whole current policy."""
        if message.get("version") is not None and message["version"] == self.pushed_version:
            return
        policy = await database_sync_to_async(current_policy)()
        self.pushed_version = policy["version"]
        await self.send(json.dumps(policy))
