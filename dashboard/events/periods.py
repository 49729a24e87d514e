"""Counts over periods longer than raw retention: raw rows and their rollups together.

Retention moves an event into a rollup in the same transaction that deletes it, so at any
moment each call is counted in exactly one of the two: the sum over both is exact. Buckets
are UTC hours, days or ISO weeks (Monday first), the rollups' minute divided alike in SQL.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import F, Sum
from django.db.models.functions import Trunc

from .models import Rollup, Violation

PERIODS = {  # name -> (span, bucket, label format, what the page calls it)
    "24h": (dt.timedelta(hours=24), "hour", "%H:00", "per hour, last 24 hours"),
    "30d": (dt.timedelta(days=30), "day", "%m-%d", "per day, last 30 days"),
    "1y": (dt.timedelta(weeks=52), "week", "%Y-%m-%d", "per week, last 52 weeks"),
}
MINUTES = {"hour": 60, "day": 1440}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _floor(when: dt.datetime, unit: str) -> dt.datetime:
    when = when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if unit in ("day", "week"):
        when = when.replace(hour=0)
    if unit == "week":
        when -= dt.timedelta(days=when.weekday())
    return when


def _step(unit: str) -> dt.timedelta:
    return {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(weeks=1)}[unit]


def _rollup_bucket(unit: str):
    """The bucket's start as a whole number of minutes since the epoch, in SQL."""
    if unit == "week":  # 1970-01-01 was a Thursday: Monday-first weeks start 3 days earlier
        return ((F("minute") / 1440 + 3) / 7) * 7 * 1440 - 3 * 1440
    return (F("minute") / MINUTES[unit]) * MINUTES[unit]


def rule_hits(rule_id: str, period: str, now: dt.datetime) -> list[tuple[str, dict]]:
    """[(label, {action: calls})] for every bucket of the period, oldest first: stored
    violations by their action, rolled-up events by their verdict (alert, deny)."""
    span, unit, fmt, _ = PERIODS[period]
    start = _floor(now - span, unit)
    counts: dict[dt.datetime, dict] = {}
    raw = (
        Violation.objects.filter(rule_id=rule_id, ts__gte=start)
        .annotate(bucket=Trunc("ts", unit, tzinfo=dt.UTC))
        .values("bucket", "action")
        .annotate(n=Sum("count"))
        .order_by()
    )
    for r in raw:
        bucket = counts.setdefault(r["bucket"], {})
        bucket[r["action"]] = bucket.get(r["action"], 0) + r["n"]
    rolled = (
        Rollup.objects.filter(rule_id=rule_id, verdict__in=("alert", "deny"), minute__gte=int(start.timestamp()) // 60)
        .annotate(bucket=_rollup_bucket(unit))
        .values("bucket", "verdict")
        .annotate(n=Sum("count"))
        .order_by()
    )
    for r in rolled:
        bucket = counts.setdefault(EPOCH + dt.timedelta(minutes=r["bucket"]), {})
        bucket[r["verdict"]] = bucket.get(r["verdict"], 0) + r["n"]
    out, at, step = [], start, _step(unit)
    while at <= now:
        out.append((at.strftime(fmt), counts.get(at, {})))
        at += step
    return out
