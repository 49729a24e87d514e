"""Browser websockets for the live connection and violation feeds."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from .feeds import FEEDS
from .models import ConnectionEvent, Violation
from .serializers import connection_row, violation_row

BACKFILL = {
    "connections": (ConnectionEvent, connection_row),
    "violations": (Violation, violation_row),
}
UNAUTHENTICATED = 4401


class FeedConsumer(AsyncJsonWebsocketConsumer):
    """Sends the newest rows on open, then every new row as it is stored."""

    async def connect(self):
        user = self.scope.get("user")
        self.feed = self.scope["url_route"]["kwargs"]["feed"]
        if not (user and user.is_authenticated) or self.feed not in FEEDS:
            await self.close(code=UNAUTHENTICATED)
            return
        self.group = FEEDS[self.feed]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "backfill", "rows": await self._backfill()})

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        pass  # the feed is one-way; filters arrive with the dashboard issue

    async def feed_rows(self, message):
        await self.send_json({"type": "rows", "rows": message["rows"]})

    @database_sync_to_async
    def _backfill(self) -> list[dict]:
        model, serialize = BACKFILL[self.feed]
        rows = model.objects.select_related("node", "container")[: settings.FEED_BACKFILL]
        return [serialize(r) for r in rows]
