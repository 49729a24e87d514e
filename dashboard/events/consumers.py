"""Browser websockets for the live connection and violation feeds.

A feed is filtered on the server (`?node=&container=&rule=&action=&dest=&port=` on the
socket URL): rows outside the filter are never sent. It opens with a backfill (the newest
rows, or with `?after=<id>` every row since the client's last, so a reconnect has no gap),
then streams. Every message to the browser is numbered (`seq`); a gap in what the channel
layer delivered here is repaired from the database and announced (`resync`). A socket
whose session ends (logout, expiry, deletion) or whose user may no longer log in with it
(deactivated, password changed elsewhere) is closed: at once on logout, within
SESSION_CHECK seconds otherwise.
"""

from __future__ import annotations

import asyncio
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user

from .feeds import FEEDS, session_group
from .filters import EventFilter, FilterError
from .serializers import sources

SOURCES = sources()
UNAUTHENTICATED = 4401
BAD_FILTER = 4400
SESSION_CHECK = 30.0
MAX_CATCH_UP = 1000


class FeedConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        self.feed = self.scope["url_route"]["kwargs"]["feed"]
        self.groups_joined = []
        if not (user and user.is_authenticated) or self.feed not in FEEDS:
            await self.close(code=UNAUTHENTICATED)
            return
        query = {k: v[-1] for k, v in parse_qs(self.scope.get("query_string", b"").decode()).items()}
        try:
            self.filter = EventFilter.parse(query)
            after = int(query["after"]) if query.get("after", "").isdigit() else None
        except FilterError:
            await self.close(code=BAD_FILTER)
            return
        self.seq = 0
        self.last_id = 0
        self.publishers: dict[str, int] = {}
        self.session_key = self.scope["session"].session_key
        for group in (FEEDS[self.feed], session_group(self.session_key)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        await self.send_rows("backfill", await self._rows(after))
        self.watch = asyncio.create_task(self._watch_session())

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "watch", None):
            self.watch.cancel()

    async def receive_json(self, content, **kwargs):
        pass  # one-way: filters are fixed per socket (the page reconnects to change them)

    async def send_rows(self, kind: str, rows: list[dict], **extra) -> None:
        self.seq += 1
        if rows:
            self.last_id = max(self.last_id, max(r["id"] for r in rows))
        await self.send_json({"type": kind, "seq": self.seq, "rows": rows, **extra})

    async def feed_rows(self, message):
        pub, n = message.get("pub"), message.get("n")
        expected = self.publishers.get(pub)
        self.publishers[pub] = n
        if expected is not None and n != expected + 1:
            missed = n - expected - 1
            rows = await self._rows(self.last_id)
            return await self.send_rows("resync", rows, reason=f"{missed} update(s) were dropped; resynced")
        rows = [r for r in message["rows"] if r["id"] > self.last_id and self.filter.matches(r)]
        if rows:
            await self.send_rows("rows", rows)

    async def session_ended(self, message):
        await self.close(code=UNAUTHENTICATED)

    async def _watch_session(self):
        while True:
            await asyncio.sleep(SESSION_CHECK)
            if not await self._session_alive():
                await self.close(code=UNAUTHENTICATED)
                return

    @database_sync_to_async
    def _session_alive(self) -> bool:
        """What Django checks on each request: the session, the user being active, and the
        session's password hash still matching the user's."""
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=self.session_key)
        user = get_user(SimpleNamespace(session=session))
        return user.is_authenticated and user.pk == self.scope["user"].pk

    @database_sync_to_async
    def _rows(self, after: int | None) -> list[dict]:
        """Backfill: the newest rows; with `after`, every row since it (oldest first, capped)."""
        model, serialize, action_field = SOURCES[self.feed]
        qs = self.filter.apply(model.objects.select_related("node", "container"), action_field)
        if after is None:
            rows = list(qs.order_by("-id")[: settings.FEED_BACKFILL])[::-1]
        else:
            rows = list(qs.filter(id__gt=after).order_by("id")[:MAX_CATCH_UP])
        return [serialize(r) for r in rows]
