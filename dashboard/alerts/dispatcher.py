"""`manage.py alerts`: route new violations to outputs, fold storms, deliver with retries.

A process of its own, reading the violation table by id: ingest and the feeds never wait
for an output, and what is queued survives a restart (notifications are rows). Each output
is delivered by one worker thread at a time, oldest first; a failure holds that output's
queue (not the others') and is retried with backoff until it succeeds or is older than
CROSSEDGE_ALERT_GIVE_UP_HOURS. A notification the output refused for good (an HTTP 4xx, a
header it cannot carry, an SMTP 5xx) is given up at once, and the queue goes on.

Dedupe: the first violation of a key (routing.dedupe_key) is sent at once and opens a
window of the output's dedupe_seconds; the violations after it in the window are counted
and sent as one notification when it ends, which opens the next window. A storm is thus
one notification per window, with the number of calls it stands for.

Several dashboard processes on PostgreSQL commit ids out of order: ids below the highest
seen are looked for again for FEED_SETTLE seconds (on SQLite commits come in id order).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Min
from django.utils import timezone

from dashboard.audit.trail import record as audit
from dashboard.events.models import Violation
from dashboard.policy.models import Rule

from .models import Cursor, Notification, Output, OutputStatus, Window
from .routing import alert_of, dedupe_key, selects
from .senders import DeliveryError, deliver

log = logging.getLogger("crossedge.alerts")

POLL = 0.2  # seconds between looks for new violations
CYCLE = 1.0  # seconds between cycles without news on PostgreSQL (see _next_wake)
IDLE_CYCLE = 10.0  # on SQLite, seconds between cycles when nothing is due and no violation arrives
BATCH = 1000  # violations routed per transaction
LATE_CHECK = 1.0  # seconds between looks for ids committed out of order (PostgreSQL)
RETRY_FIRST = 1.0
SEND_BATCH = 50  # deliveries recorded per transaction, or what was sent in SEND_RECORD_EVERY seconds
SEND_RECORD_EVERY = 1.0


def backoff(attempts: int) -> float:
    return min(RETRY_FIRST * 2 ** (attempts - 1), settings.ALERT_RETRY_MAX)


class Dispatcher:
    def __init__(self, workers: int = 4):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="alert-output")
        self.busy: dict[int, Future] = {}
        self.cursor: Cursor | None = None
        self.done: set[int] = set()  # ids above cursor.settled already routed
        self.seen = collections.deque()  # (monotonic, highest id then): settles after FEED_SETTLE
        self.last_late = 0.0
        self.wake_at = 0.0  # monotonic time of the next cycle without news (0: at once)
        self.version: tuple | None = None  # the connection's data_version at the last look (SQLite)

    def run(self, stop: threading.Event) -> None:
        due = False  # something was queued at the last look (a worker may be ending)
        while not stop.is_set():
            due = self.step(due)
            stop.wait(POLL)
        self.pool.shutdown(wait=True)

    def step(self, due: bool = False) -> bool:
        """One look: a cycle when something was due, its time came, or a violation arrived."""
        try:
            if due or time.monotonic() >= self.wake_at or (self.changed() and self.arrived()):
                return self.cycle()
        except Exception:  # a database hiccup must not end alerting: log, wait, go on
            log.exception("alerts: cycle failed; retrying")
            close_old_connections()
        return due

    def cycle(self) -> bool:
        """Route, close windows, start deliveries; when the next cycle is due without news.
        Whether anything was due (then the next look comes at the next poll)."""
        self.changed()  # what this cycle reads is seen
        self.route()
        due = self.deliver()
        self.wake_at = self._next_wake()
        return due

    def changed(self) -> bool:
        """Whether another connection committed since the last look. On SQLite its
        data_version says so for a few microseconds, without a query plan: a quiet node's
        dispatcher then makes no query at all. Elsewhere always (arrived() is the look)."""
        if connection.vendor != "sqlite":
            return True
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            version = (id(connection.connection), cursor.fetchone()[0])  # (a new connection starts anew)
        seen, self.version = self.version, version
        return version != seen

    def arrived(self) -> bool:
        """Whether a violation was stored since the last routing: one indexed look, as a full
        cycle (routing, windows, deliveries) five times a second was most of an idle node's
        alerting CPU (0.023 of a core)."""
        return self.cursor is None or Violation.objects.filter(id__gt=self.cursor.last_id).exists()

    def _next_wake(self) -> float:
        """The monotonic time of the next cycle without a new violation. PostgreSQL: CYCLE
        (ids committed out of order are looked for). SQLite: a window's end or a queued
        notification's retry, whichever comes first, or IDLE_CYCLE (an output an admin
        enabled with notifications queued for it is served by then)."""
        if connection.vendor != "sqlite":
            return time.monotonic() + CYCLE
        times = [
            Window.objects.aggregate(t=Min("ends_at"))["t"],
            Notification.objects.filter(state="queued", output__enabled=True).aggregate(t=Min("next_try_at"))["t"],
        ]
        now = timezone.now()
        wait = min([(t - now).total_seconds() for t in times if t] + [IDLE_CYCLE])
        return time.monotonic() + max(0.0, wait)

    # -- routing ------------------------------------------------------------------------
    def route(self) -> int:
        """Route the violations stored since the last cycle; close the windows that ended."""
        with transaction.atomic():
            cursor = self.cursor or Cursor.objects.get_or_create(name="violations")[0]
            before = (cursor.last_id, cursor.settled)
            rows = list(
                Violation.objects.filter(id__gt=cursor.last_id)
                .select_related("node", "container")
                .order_by("id")[:BATCH]
            )
            rows += self._late(cursor)
            now = timezone.now()
            if rows:
                self._route(rows, now)
                cursor.last_id = max(cursor.last_id, *(v.id for v in rows))
            self._close_windows(now)
            self._settle(cursor)
            if self.cursor is None or (cursor.last_id, cursor.settled) != before:
                cursor.save()  # not 5 writes a second to a database ingest shares, when idle
            self.cursor = cursor
        return len(rows)

    def _late(self, cursor: Cursor) -> list[Violation]:
        if connection.vendor == "sqlite" or time.monotonic() - self.last_late < LATE_CHECK:
            return []
        self.last_late = time.monotonic()
        ids = Violation.objects.filter(id__gt=cursor.settled, id__lte=cursor.last_id).values_list("id", flat=True)
        missed = set(ids) - self.done
        if missed:
            log.info("alerts: %d violation(s) committed out of id order, routed now", len(missed))
        return list(Violation.objects.filter(id__in=missed).select_related("node", "container").order_by("id"))

    def _settle(self, cursor: Cursor) -> None:
        if connection.vendor == "sqlite":
            cursor.settled = cursor.last_id
            return
        now = time.monotonic()
        self.seen.append((now, cursor.last_id))
        while self.seen and now - self.seen[0][0] > settings.FEED_SETTLE:
            cursor.settled = max(cursor.settled, self.seen.popleft()[1])
        self.done = {i for i in self.done if i > cursor.settled}

    def _route(self, rows: list[Violation], now: dt.datetime) -> None:
        self.done.update(v.id for v in rows)
        outputs = list(Output.objects.filter(enabled=True))
        if not outputs:
            return
        rules = {
            r["rule_id"]: r
            for r in Rule.objects.filter(rule_id__in={v.rule_id for v in rows}).values("rule_id", "tags", "description")
        }
        groups: dict[tuple[int, str], list] = {}
        by_pk = {o.pk: o for o in outputs}
        for v in rows:
            alert = alert_of(v, rules.get(v.rule_id))
            for output in outputs:
                if selects(output, alert):
                    groups.setdefault((output.pk, dedupe_key(alert)), []).append((v, alert))
        for (pk, key), items in groups.items():
            self._offer(by_pk[pk], key, items, now)

    def _offer(self, output: Output, key: str, items: list, now: dt.datetime) -> None:
        if not output.dedupe_seconds:
            Notification.objects.bulk_create([_notification(output, key, [item]) for item in items])
            return
        window = Window.objects.filter(output=output, key=key).first()
        if window is None or (window.ends_at <= now and not window.pending):
            Notification.objects.create(**_fields(output, key, items[:1]))
            items = items[1:]
            ends = now + dt.timedelta(seconds=output.dedupe_seconds)
            if window is None:
                window = Window(output=output, key=key, ends_at=ends)
            window.ends_at, window.pending, window.first_ts = ends, 0, None
        if items:
            calls = sum(v.count for v, _ in items)
            window.pending += calls
            window.first_ts = window.first_ts or items[0][0].ts
            window.last_ts = items[-1][0].ts
            window.violation_id, window.summary = items[-1][0].id, items[-1][1]
            OutputStatus.objects.filter(output=output).update(folded=F("folded") + calls)
        window.save()

    def _close_windows(self, now: dt.datetime) -> None:
        for window in Window.objects.filter(ends_at__lte=now).select_related("output"):
            if not window.pending:
                window.delete()
                continue
            Notification.objects.create(
                output=window.output, key=window.key, violation_id=window.violation_id, count=window.pending,
                first_ts=window.first_ts, last_ts=window.last_ts, summary=window.summary,
            )  # fmt: skip
            window.ends_at = now + dt.timedelta(seconds=window.output.dedupe_seconds or 1)
            window.pending, window.first_ts, window.last_ts = 0, None, None
            window.save()

    # -- delivery -----------------------------------------------------------------------
    def deliver(self) -> bool:
        """Start a worker for each output with something due and no worker running; whether
        anything was due (then the next look comes at the next poll, not the next cycle:
        a worker that found its queue empty just before more came may be ending)."""
        due = (
            Notification.objects.filter(state="queued", next_try_at__lte=timezone.now(), output__enabled=True)
            .values_list("output_id", flat=True)
            .distinct()
        )
        due = list(due)
        for pk in due:
            if pk not in self.busy or self.busy[pk].done():
                self.busy[pk] = self.pool.submit(self._drain, pk)
        return bool(due)

    def _drain(self, pk: int) -> None:
        """Send an output's queue oldest first, recording each batch in one transaction (the
        database is shared with ingest); stop at the first failure (retried later)."""
        try:
            output = Output.objects.get(pk=pk)
            while True:
                now = timezone.now()
                batch = list(Notification.objects.filter(output=output, state="queued").order_by("id")[:SEND_BATCH])
                sent, failed, began = [], None, time.monotonic()
                for notification in batch:
                    if notification.next_try_at > now or time.monotonic() - began > SEND_RECORD_EVERY:
                        break
                    error, permanent = send(output, notification)
                    if error:
                        failed = (notification, error)
                        break
                    sent.append(notification)
                record(output, sent, failed, retry=not (failed and permanent))
                if (failed and not permanent) or not (sent or failed):
                    return
        except Exception:
            log.exception("alerts: delivering to output %s failed unexpectedly", pk)
        finally:
            close_old_connections()


def send(output: Output, notification: Notification) -> tuple[str, bool]:
    """Deliver one notification now: ("", False), or why it failed and whether for good."""
    notification.attempts += 1
    try:
        deliver(output, notification)
    except DeliveryError as exc:
        return str(exc)[:500] or "delivery failed", exc.permanent
    notification.sent_at = timezone.now()
    return "", False


def record(output: Output, sent: list[Notification], failed: tuple[Notification, str] | None, retry=True) -> None:
    """What a run of deliveries did: the notifications' states, the output's counters and last error."""
    if not sent and not failed:
        return
    now = timezone.now()
    with transaction.atomic():
        OutputStatus.objects.get_or_create(output=output)
        statuses = OutputStatus.objects.filter(output=output)
        if sent:
            for notification in sent:
                notification.state, notification.last_error = "sent", ""
            Notification.objects.bulk_update(sent, ["attempts", "state", "sent_at", "last_error"])
            statuses.update(sent=F("sent") + len(sent), last_sent_at=sent[-1].sent_at, failing_since=None)
        if failed:
            notification, error = failed
            give_up = not retry or now - notification.created_at > dt.timedelta(hours=settings.ALERT_GIVE_UP_HOURS)
            notification.last_error = error
            if give_up:
                notification.state = "given_up"
            else:
                notification.next_try_at = now + dt.timedelta(seconds=backoff(notification.attempts))
            notification.save(update_fields=["attempts", "last_error", "state", "next_try_at"])
            statuses.update(
                failures=F("failures") + 1,
                given_up=F("given_up") + (1 if give_up else 0),
                last_error=error,
                last_error_at=now,
            )
            statuses.filter(failing_since=None).update(failing_since=now)
            log.warning("alerts: %s: %s%s", output.name, error, " (given up)" if give_up else "")


def _fields(output: Output, key: str, items: list) -> dict:
    (first, alert), (last, _) = items[0], items[-1]
    return {
        "output": output,
        "key": key,
        "violation_id": last.id,
        "count": sum(v.count for v, _ in items),
        "first_ts": first.ts,
        "last_ts": last.ts,
        "summary": alert,
    }


def _notification(output: Output, key: str, items: list) -> Notification:
    return Notification(**_fields(output, key, items))


def send_test(output: Output, user: str) -> Notification:
    """A test alert, sent now (not retried): the result is on the notification and in the
    output's counters, so the page shows whether the output works."""
    now = timezone.now()
    summary = {"rule_id": "test", "severity": "info", "action": "alert", "node": "dashboard", "container_name": "",
               "target": output.shown_target, "description": f"sent by {user} from the dashboard"}  # fmt: skip
    notification = Notification.objects.create(
        output=output, key="test", count=1, first_ts=now, last_ts=now, summary=summary, test=True
    )
    error, _ = send(output, notification)
    record(output, [] if error else [notification], (notification, error) if error else None, retry=False)
    audit("test_alert", output.name, delivered=not error, **({"error": error} if error else {}))
    return notification
