"""Browser websockets for the live connection and violation feeds.

A feed is filtered on the server (`?node=&container=&rule=&action=&dest=&port=` on the
socket URL): rows outside the filter are never sent. It opens with a backfill (the newest
rows, or with `?after=<id>` every row since the client's last, so a reconnect has no gap),
then streams. "Since" is not just "a higher id": with several dashboard processes ids
commit out of order, so a catch-up also sends the lower ids stored up to FEED_SETTLE
seconds before the client's last row (the page skips those it shows; ingest warns when a
commit takes longer than that). Every message to the browser is numbered (`seq`); a gap in what the channel
layer delivered here is repaired from the database and announced (`resync`). A socket
whose session ends (logout, expiry, deletion) or whose user may no longer log in with it
(deactivated, password changed elsewhere) is closed: at once on logout, within
SESSION_CHECK seconds otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user

from .feeds import FEEDS, session_group
from .filters import EventFilter, FilterError
from .models import ConnectionEvent
from .serializers import sources

SOURCES = sources()
UNAUTHENTICATED = 4401
BAD_FILTER = 4400
SESSION_CHECK = 30.0
MAX_CATCH_UP = 1000
RECENT_IDS = 5000  # ids this socket sent lately: a row is never sent twice


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
        self.sent: collections.OrderedDict[int, None] = collections.OrderedDict()  # recent ids sent
        self.publishers: dict[str, int] = {}
        self.session_key = self.scope["session"].session_key
        for group in (FEEDS[self.feed], session_group(self.session_key)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        rows, more = await self._rows(after)
        notice = f"more than {MAX_CATCH_UP} rows since the last one shown: the newest follow"
        await self.send_rows("backfill", rows, **({"notice": notice} if more else {}))
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
        for r in rows:
            self.sent[r["id"]] = None
        while len(self.sent) > RECENT_IDS:
            self.sent.popitem(last=False)
        await self.send_json({"type": kind, "seq": self.seq, "rows": rows, **extra})

    async def feed_rows(self, message):
        pub, n = message.get("pub"), message.get("n")
        expected = self.publishers.get(pub)
        self.publishers[pub] = n
        if expected is not None and n != expected + 1:
            missed = n - expected - 1
            rows, more = await self._rows(self.last_id)
            reason = f"{missed} update(s) were dropped; resynced"
            reason += f" (the newest {MAX_CATCH_UP} rows)" if more else ""
            return await self.send_rows("resync", [r for r in rows if r["id"] not in self.sent], reason=reason)
        # Not "id > the last id": with several dashboard processes ids commit out of order,
        # and a row committed late carries a lower id than rows already shown.
        rows = [r for r in message["rows"] if r["id"] not in self.sent and self.filter.matches(r)]
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
    def _rows(self, after: int | None) -> tuple[list[dict], bool]:
        """Backfill: the newest rows; with `after`, every row since it, oldest first, or the
        newest MAX_CATCH_UP of them (and True: the caller says so) when there are more."""
        model, serialize, action_field = SOURCES[self.feed]
        qs = self.filter.apply(model.objects.select_related("node", "container"), action_field)
        if after is None:
            return [serialize(r) for r in list(qs.order_by("-id")[: settings.FEED_BACKFILL])[::-1]], False
        rows = list(qs.filter(id__gt=after).order_by("-id")[: MAX_CATCH_UP + 1])
        more = len(rows) > MAX_CATCH_UP
        rows = rows[:MAX_CATCH_UP][::-1]
        received = "received_at" if model is ConnectionEvent else "event__received_at"
        # Rows committed late: a lower id than rows the client has, stored about as early as
        # its last one. (Past the cap the gap is announced, and what it hides is in Search.)
        mark = model.objects.filter(id=after).values_list(received, flat=True).first()
        if mark is not None and not more:
            cutoff = mark - dt.timedelta(seconds=settings.FEED_SETTLE)
            late = qs.filter(id__lte=after, **{f"{received}__gte": cutoff}).exclude(id__in=self.sent)
            rows = list(late.order_by("id")[:MAX_CATCH_UP]) + rows
        return [serialize(r) for r in rows], more
