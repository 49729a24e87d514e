"""The live feeds' channel-layer groups, and publishing to them after a commit."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

FEEDS = {"connections": "feed-connections", "violations": "feed-violations"}


def publish(feed: str, rows: list[dict]) -> None:
    """Send rows (already serialised) to every browser on the feed. Call after commit."""
    if not rows:
        return
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(FEEDS[feed], {"type": "feed.rows", "rows": rows})
