"""The live feeds' channel-layer groups, and publishing to them after a commit.

Each published message carries this process's id and a per-feed number, so a consumer
can tell when the channel layer dropped messages for it (layers drop on a full channel)
and resync from the database instead of silently missing rows.
"""

from __future__ import annotations

import itertools
import threading
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

FEEDS = {"connections": "feed-connections", "processes": "feed-processes", "violations": "feed-violations"}
MESSAGE_ROWS = 500  # rows in one message at most (ingest stores many agents' batches at once)
PUBLISHER = uuid.uuid4().hex[:12]
_numbers = {feed: itertools.count(1) for feed in FEEDS}
_lock = threading.Lock()


def publish(feed: str, rows: list[dict]) -> None:
    """Send rows (already serialised, oldest first) to every browser on the feed. Call after commit."""
    if not rows:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    for start in range(0, len(rows), MESSAGE_ROWS):
        with _lock:  # numbered and sent in one go: threads publishing at once keep the order
            message = {"type": "feed.rows", "rows": rows[start : start + MESSAGE_ROWS], "pub": PUBLISHER,
                       "n": next(_numbers[feed])}  # fmt: skip
            async_to_sync(layer.group_send)(FEEDS[feed], message)


def session_group(session_key: str) -> str:
    return f"session-{session_key}"
