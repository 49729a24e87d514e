"""Stacked bar charts as plain SVG shapes, computed on the server: no chart library, no
build step, and the numbers are in the page for a test (or a screen reader) to read."""

from __future__ import annotations

STACK = ("allow", "alert", "deny")


def stacked_bars(buckets: list[tuple[str, dict]], width: int = 900, height: int = 160) -> dict:
    """buckets: [(label, {action: count})] in time order -> rects and axis labels to draw."""
    top = max((sum(c.values()) for _, c in buckets), default=0) or 1
    slot = width / max(len(buckets), 1)
    bars, labels = [], []
    for i, (label, counts) in enumerate(buckets):
        y = height
        for action in STACK:
            n = counts.get(action, 0)
            if not n:
                continue
            h = max(1.0, n / top * (height - 4))
            y -= h
            bars.append({"x": round(i * slot + 1, 1), "y": round(y, 1), "w": round(max(slot - 2, 1), 1),
                         "h": round(h, 1), "cls": action, "title": f"{label}: {n} {action}"})  # fmt: skip
        if i % max(1, len(buckets) // 6) == 0:
            labels.append({"x": round(i * slot, 1), "text": label})
    return {"width": width, "height": height, "bars": bars, "labels": labels, "max": top}
