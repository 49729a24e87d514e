"""Alert delivery in `/metrics`: per output, from its status row (no notification is counted
at scrape time but the queued ones, through the queue index)."""

from django.db.models import Count, Q
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .models import Output


class AlertCollector:
    def collect(self):
        sent = CounterMetricFamily(
            "crossedge_alert_notifications", "Notifications by outcome", labels=["output", "outcome"]
        )
        failures = CounterMetricFamily("crossedge_alert_failures", "Failed delivery attempts", labels=["output"])
        folded = CounterMetricFamily(
            "crossedge_alert_folded", "Violations counted into a dedupe window's notification", labels=["output"]
        )
        queued = GaugeMetricFamily("crossedge_alert_queued", "Notifications waiting to be delivered", labels=["output"])
        failing = GaugeMetricFamily("crossedge_alert_failing", "1 while the newest attempt failed", labels=["output"])
        last = GaugeMetricFamily(
            "crossedge_alert_last_sent_timestamp_seconds", "When the last notification was delivered", labels=["output"]
        )
        waiting = Count("notifications", filter=Q(notifications__state="queued"))
        for output in Output.objects.select_related("status").annotate(waiting=waiting):
            status = getattr(output, "status", None)
            name = output.name
            sent.add_metric([name, "sent"], status.sent if status else 0)
            sent.add_metric([name, "given_up"], status.given_up if status else 0)
            failures.add_metric([name], status.failures if status else 0)
            folded.add_metric([name], status.folded if status else 0)
            queued.add_metric([name], output.waiting)
            failing.add_metric([name], 1 if status and status.failing_since else 0)
            if status and status.last_sent_at:
                last.add_metric([name], status.last_sent_at.timestamp())
        yield from (sent, failures, folded, queued, failing, last)
