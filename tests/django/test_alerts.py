"""Alert outputs with real receivers on loopback: each output gets exactly what its route
selects, a storm is one notification per dedupe window with its count, a receiver that was
down gets everything once it is back, a slow output holds up no other; the outputs file,
the page, the test button and /metrics."""

import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import os
import re
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard.alerts import config
from dashboard.alerts.dispatcher import Dispatcher
from dashboard.alerts.models import Notification, Output, OutputStatus
from dashboard.alerts.senders import syslog_line
from dashboard.events.ingest import ingest_batch
from dashboard.events.retention import prune
from dashboard.policy.models import Rule
from tests.receivers import ALERTMANAGER, Alertmanager, Smtp, Syslog, Webhook

from .conftest import agent_event

pytestmark = pytest.mark.django_db(transaction=True)  # the dispatcher's threads read what the test wrote


def violation(seq, rule="deny-ssh", container="web-1", severity="high", verdict="deny", count=1, **extra):
    cid = hashlib.sha256(container.encode()).hexdigest()
    return agent_event(
        seq, verdict=verdict, rule_id=rule, severity=severity, count=count,
        cgroup_path=f"/system.slice/docker-{cid}.scope",
        container={"runtime": "docker", "id": cid, "name": container, "pod_uid": "", "image": "i", "labels": {}},
        **extra,
    )  # fmt: skip


@contextlib.contextmanager
def dispatching():
    """The dispatcher as `manage.py alerts` runs it, in a thread, stopped at the end."""
    stop = threading.Event()
    dispatcher = Dispatcher()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        thread.join(30)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def output(name, kind, target, **route):
    return Output.objects.create(name=name, kind=kind, target=target, **route)


@pytest.fixture
def rules(db):
    Rule.objects.create(rule_id="deny-ssh", action="deny", severity="high", tags=["lateral"], dest_port="22")
    Rule.objects.create(rule_id="deny-db", action="deny", severity="critical", tags=["data"], dest_port="5432")
    Rule.objects.create(rule_id="watch-dns", action="alert", severity="low", tags=["dns"], dest_port="53")


@pytest.fixture
def alertmanager(tmp_path):
    if not os.path.exists(ALERTMANAGER):
        message = f"{ALERTMANAGER} missing (make test installs prometheus-alertmanager)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    am = Alertmanager(str(tmp_path)).start()
    yield am
    am.stop()


def test_each_output_receives_exactly_what_its_route_selects(node, rules, alertmanager, settings):
    hook, udp, tcp, smtp = Webhook().start(), Syslog("udp").start(), Syslog("tcp").start(), Smtp().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # pytest-django's is in memory
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    try:
        output("soc-hook", "webhook", hook.url, rules="deny-*", dedupe_seconds=0)
        output("siem-udp", "syslog", udp.url + "?facility=local3", min_severity="critical", dedupe_seconds=0)
        output("siem-tcp", "syslog", tcp.url, tags="dns", dedupe_seconds=0)
        output("am", "alertmanager", alertmanager.url, containers="db-*", dedupe_seconds=0)
        output("mail", "email", "oncall@example.test", nodes="edge-1", actions="alert", dedupe_seconds=0)
        output("other-node", "webhook", hook.url + "?never", nodes="edge-9", dedupe_seconds=0)
        with dispatching():
            ingest_batch(node, [
                violation(1, "deny-ssh", "web-1", "high"),
                violation(2, "deny-db", "db-1", "critical", count=7),
                violation(3, "watch-dns", "web-1", "low", verdict="alert", dest_port=53),
                agent_event(4, verdict="allow", rule_id="", severity=""),  # no violation: nothing anywhere
            ])  # fmt: skip
            wait_for(lambda: Notification.objects.filter(state="sent").count() == 6, what="six deliveries")
        hooked = {(b["crossedge"]["rule_id"], b["crossedge"]["count"]) for b in hook.bodies()}
        assert hooked == {("deny-ssh", 1), ("deny-db", 7)} and all(p == "/hook" for _, p, _ in hook.received)
        assert all(b["text"].startswith("[CrossEdge] ") for b in hook.bodies())  # what Slack/Mattermost show
        [critical] = udp.messages()
        assert critical.startswith(f"<{19 * 8 + 2}>1 ") and 'rule_id="deny-db"' in critical and 'count="7"' in critical
        [dns] = tcp.messages()
        assert f"<{16 * 8 + 5}>1 " in dns[:10] and 'rule_id="watch-dns"' in dns  # local0, notice
        [am] = wait_for(alertmanager.alerts, what="the alert in Alertmanager")
        assert am["labels"].items() >= {"alertname": "CrossEdgeViolation", "rule": "deny-db", "container": "db-1",
                                     "severity": "critical", "node": "edge-1"}.items()  # fmt: skip
        assert am["annotations"]["count"] == "7" and "db-1" in am["annotations"]["summary"]
        [(_, rcpt, mail)] = smtp.received
        assert rcpt == ["oncall@example.test"] and "watch-dns" in mail and "Subject: [CrossEdge] low alert" in mail
        assert not Notification.objects.filter(output__name="other-node").exists()
        statuses = {s.output.name: s.sent for s in OutputStatus.objects.select_related("output")}
        assert statuses == {"soc-hook": 2, "siem-udp": 1, "siem-tcp": 1, "am": 1, "mail": 1, "other-node": 0}
    finally:
        hook.stop(), udp.stop(), tcp.stop(), smtp.stop()


def test_a_storm_is_one_notification_per_window_with_its_count(node, rules):
    hook = Webhook().start()
    try:
        output("hook", "webhook", hook.url, dedupe_seconds=2)
        with dispatching():
            started = time.monotonic()
            ingest_batch(node, [violation(1, count=3)])
            wait_for(lambda: len(hook.received) == 1, what="the storm's first violation, at once")
            assert hook.received[0][0] - started < 1.0 and hook.bodies()[0]["crossedge"]["count"] == 3
            for seq in range(2, 52):  # 50 more rows in the window, 5 calls each
                ingest_batch(node, [violation(seq, count=5)])
            ingest_batch(node, [violation(99, container="web-2")])  # another container: its own window
            wait_for(lambda: len(hook.received) == 3, 5, "the window's notification")
            time.sleep(4.5)  # two more windows: the last ended empty, nothing more to say
        arrived = {b["crossedge"]["container_name"]: [] for b in hook.bodies()}
        for when, _, body in hook.received:
            arrived[body["crossedge"]["container_name"]].append((when - started, body["crossedge"]["count"]))
        (first, n1), (second, n2) = arrived["web-1"]
        assert (n1, n2) == (3, 250) and 1.9 <= second - first <= 3.0  # every call, once, a window apart
        assert [n for _, n in arrived["web-2"]] == [1]
        assert OutputStatus.objects.get(output__name="hook").folded == 250
    finally:
        hook.stop()


def test_a_quiet_dispatcher_asks_sqlite_only_whether_anything_was_committed(node, rules):
    """Idle, its looks are SQLite's data_version, no query; another process's violation is
    routed and delivered at the next look."""
    hook = Webhook().start()
    try:
        output("hook", "webhook", hook.url, dedupe_seconds=0)
        dispatcher = Dispatcher()
        assert dispatcher.step() is False  # the first look is a cycle: nothing queued
        with CaptureQueriesContext(connection) as looks:
            for _ in range(3):
                assert dispatcher.step() is False
        assert [q["sql"] for q in looks] == ["PRAGMA data_version"] * 3
        writer = threading.Thread(target=lambda: (ingest_batch(node, [violation(1)]), connection.close()))
        writer.start()  # another connection, as ingest in daphne
        writer.join()
        with CaptureQueriesContext(connection) as looks:
            dispatcher.step()
        assert len(looks) > 3 and any("alerts_notification" in q["sql"] for q in looks)  # a cycle: routed
        wait_for(lambda: len(hook.received) == 1, what="the violation's delivery")
        assert hook.bodies()[0]["crossedge"]["rule_id"] == "deny-ssh"
        dispatcher.pool.shutdown(wait=True)
    finally:
        close_old_connections()
        hook.stop()


def test_a_receiver_down_for_30_s_gets_everything_in_order_once_back(node, rules):
    hook = Webhook()
    fast = Webhook().start()
    try:
        output("down", "webhook", hook.url, dedupe_seconds=0)
        output("up", "webhook", fast.url, dedupe_seconds=0)
        with dispatching():
            ingest_batch(node, [violation(1)])
            wait_for(lambda: OutputStatus.objects.get(output__name="down").failures >= 1, what="a failed attempt")
            for seq in range(2, 6):
                ingest_batch(node, [violation(seq, container=f"web-{seq}")])
            wait_for(lambda: len(fast.received) == 5, what="the other output, unaffected")
            status = OutputStatus.objects.get(output__name="down")
            assert status.failing_since and "Connection refused" in status.last_error
            time.sleep(30 - (time.monotonic() - fast.received[0][0]))
            hook.start()  # back, on the same port
            back = time.monotonic()
            wait_for(lambda: len(hook.received) == 5, 40, "the queue delivered after the outage")
            assert time.monotonic() - back < 20  # retries at most ALERT_RETRY_MAX (15 s) apart
        containers = [b["crossedge"]["container_name"] for b in hook.bodies()]
        assert containers == ["web-1", "web-2", "web-3", "web-4", "web-5"]  # in order, none twice
        status = OutputStatus.objects.get(output__name="down")
        assert status.sent == 5 and status.failing_since is None and status.failures >= 3 and status.given_up == 0
        assert not Notification.objects.filter(state="queued").exists()
    finally:
        hook.stop(), fast.stop()


def test_a_slow_output_holds_up_no_other(node, rules):
    slow, fast = Webhook(delay=3).start(), Webhook().start()
    try:
        output("slow", "webhook", slow.url, dedupe_seconds=0, timeout_seconds=10)
        output("fast", "webhook", fast.url, dedupe_seconds=0)
        with dispatching():
            started = time.monotonic()
            for seq in range(1, 4):
                ingest_batch(node, [violation(seq, container=f"web-{seq}")])
            wait_for(lambda: len(fast.received) == 3, 2, "the fast output's three")
            assert fast.received[-1][0] - started < 1.5 and len(slow.received) <= 1
            wait_for(lambda: OutputStatus.objects.get(output__name="slow").sent == 3, 15, "the slow one's three")
    finally:
        slow.stop(), fast.stop()


def test_an_output_that_keeps_failing_gives_up_after_its_time_and_says_why(node, rules, settings):
    hook = Webhook(status=500).start()
    try:
        settings.ALERT_GIVE_UP_HOURS = 0  # anything older than now is given up at its next failure
        output("broken", "webhook", hook.url, dedupe_seconds=0)
        with dispatching():
            ingest_batch(node, [violation(1)])
            wait_for(lambda: Notification.objects.filter(state="given_up").exists(), what="given up")
        status = OutputStatus.objects.get(output__name="broken")
        assert status.given_up == 1 and status.failures == 1 and status.last_error.startswith("HTTP 500 from 127.0.0.1")
    finally:
        hook.stop()


LADEN = "web\r\nBcc: all@example.test\n<!channel> <http://x.test|click> & \u2028\x1b[2J"  # a container's own name


def test_a_name_laden_with_newlines_and_markup_reaches_every_output_as_one_inert_line(node, rules, settings):
    hook, udp, smtp = Webhook().start(), Syslog("udp").start(), Smtp().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    try:
        output("hook", "webhook", hook.url, dedupe_seconds=0)
        output("siem", "syslog", udp.url, dedupe_seconds=0)
        output("mail", "email", "oncall@example.test", dedupe_seconds=0)
        with dispatching():
            ingest_batch(node, [violation(1, container=LADEN)])
            wait_for(lambda: Notification.objects.filter(state="sent").count() == 3, what="three deliveries")
        [body] = hook.bodies()
        assert "\n" not in body["text"] and "<!channel>" not in body["text"] and "<http" not in body["text"]
        assert "&lt;!channel&gt; &lt;http://x.test|click&gt; &amp;" in body["text"]  # shown, not acted on
        assert body["crossedge"]["container_name"] == LADEN  # the fields themselves: exact, in JSON
        [line] = udp.messages()
        assert not any(c in line for c in "\r\n\u2028\x1b") and "web\\r\\nBcc: all@example.test\\n" in line
        [(_, rcpt, mail)] = smtp.received
        assert rcpt == ["oncall@example.test"]  # no Bcc smuggled in
        parsed = email.message_from_string(mail, policy=email.policy.default)
        assert "web\\r\\nBcc: all@example.test" in parsed["Subject"] and parsed["Bcc"] is None
    finally:
        hook.stop(), udp.stop(), smtp.stop()


def test_a_notification_refused_for_good_is_given_up_at_once_and_holds_up_nothing(node, rules):
    """An HTTP 400 is not retried (the output would refuse it again, and every notification
    behind it would wait); a 500 is."""
    hook = Webhook(status_of=lambda body: 400 if "web-1" in body["text"] else 200).start()
    try:
        output("picky", "webhook", hook.url, dedupe_seconds=0)
        with dispatching():
            ingest_batch(node, [violation(1, container="web-1"), violation(2, container="web-2")])
            wait_for(lambda: Notification.objects.filter(state="sent").exists(), 5, "the second one delivered")
        states = dict(Notification.objects.values_list("summary__container_name", "state"))
        assert states == {"web-1": "given_up", "web-2": "sent"}
        status = OutputStatus.objects.get(output__name="picky")
        assert (status.given_up, status.failures, status.sent) == (1, 1, 1) and "HTTP 400" in status.last_error
        assert len(hook.received) == 2  # one try each
    finally:
        hook.stop()


def test_syslog_lines_are_rfc5424_with_escaped_structured_data():
    out = Output(name="s", kind="syslog", target="udp://127.0.0.1:514?facility=auth")
    alert = {"rule_id": 'a"b]c\\d', "severity": "critical", "action": "deny", "node": "n", "container_name": "c",
             "target": "t", "count": 2, "first_ts": "2026-01-01T00:00:00+00:00", "last_ts": "2026-01-01T00:00:01+00:00",
             "test": False, "text": "hello"}  # fmt: skip
    line = syslog_line(out, alert, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)).decode()
    header = r"<34>1 2026-01-02T03:04:05\.000000Z \S+ crossedge - violation "
    assert re.match(header + r'\[crossedge@32473 rule_id="a\\"b\\]c\\\\d" action="deny" ', line), line
    assert line.endswith(' count="2" first="2026-01-01T00:00:00+00:00" last="2026-01-01T00:00:01+00:00"] \ufeffhello')


GOOD = """
outputs:
  - name: soc
    kind: webhook
    target: https://hooks.example.test/T0/B0
    rules: [deny-*, watch-dns]
    min_severity: high
  - name: siem
    kind: syslog
    target: tcp://127.0.0.1:6514
"""


@pytest.mark.parametrize(
    "text, message",
    [
        ("outputs: [{name: x, kind: webhook, target: 'file:///etc/passwd'}]", "output 'x': target: a webhook output"),
        ("outputs: [{name: x, kind: syslog, target: 'udp://h'}]", "udp://host:port"),
        ("outputs: [{name: x, kind: syslog, target: 'udp://h:514?facility=bogus'}]", "unknown syslog facility"),
        ("outputs: [{name: x, kind: email, target: 'not-an-address'}]", "not an email address"),
        ("outputs: [{name: x, kind: pager, target: 'x'}]", "kind"),
        ("outputs: [{name: x, kind: webhook, target: 'http://h', colour: red}]", "unknown field(s) colour"),
        ("outputs: [{name: x, kind: webhook, target: 'http://h', actions: [allow]}]", "actions"),
        ("outputs: [{name: x, kind: webhook, target: 'http://h'}, {name: x, kind: webhook, target: 'http://h'}]",
         "named twice"),
        ("outputs: !!str x", "tags are not allowed in alert output files"),
        ("outputs: [", "not valid YAML"),
        ("rules: []", "one key, `outputs:`"),
    ],
)  # fmt: skip
def test_a_bad_outputs_file_is_refused_whole_and_says_where(text, message, tmp_path):
    Output.objects.create(name="keep", kind="webhook", target="http://127.0.0.1:1/x", from_env=True)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.apply(config.parse(text, "alerts.yaml"))
    assert list(Output.objects.values_list("name", flat=True)) == ["keep"]
    path = tmp_path / "alerts.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("alerts", check=str(path))


def test_the_outputs_file_is_the_truth_for_what_it_names():
    Output.objects.create(name="old", kind="webhook", target="http://127.0.0.1:1/x", from_env=True)
    Output.objects.create(name="mine", kind="webhook", target="http://127.0.0.1:1/y")  # made in the admin
    assert config.apply(config.parse(GOOD)) == {"created": 2, "updated": 0, "removed": 1}
    soc = Output.objects.get(name="soc")
    assert (soc.rules, soc.min_severity, soc.from_env, soc.dedupe_seconds) == ("deny-*,watch-dns", "high", True, 60)
    assert sorted(Output.objects.values_list("name", flat=True)) == ["mine", "siem", "soc"]
    assert config.apply(config.parse(GOOD.replace("high", "critical"))) == {"created": 0, "updated": 2, "removed": 0}
    assert Output.objects.get(name="soc").min_severity == "critical" and OutputStatus.objects.count() == 3
    with pytest.raises(config.ConfigError, match="made in the admin: mine"):
        config.apply(config.parse(GOOD.replace("name: siem", "name: mine")))


def test_the_page_shows_outputs_and_the_test_button_sends_now(client, staff, viewer):
    hook = Webhook().start()
    try:
        out = output("soc-hook", "webhook", hook.url + "?token=secret-in-url")
        broken = output("nowhere", "syslog", "tcp://127.0.0.1:9")  # discard port: refused
        client.force_login(staff)
        page = client.get("/alerts/").content.decode()
        assert "soc-hook" in page and "Send a test alert" in page and "secret-in-url" not in page
        response = client.post(f"/alerts/{out.pk}/test/", follow=True)
        assert "test alert delivered" in response.content.decode()
        [body] = hook.bodies()
        assert body["crossedge"]["test"] is True and "sent by staff" in body["text"]
        response = client.post(f"/alerts/{broken.pk}/test/", follow=True)
        assert "test alert failed: syslog tcp://127.0.0.1:9" in response.content.decode()
        assert Notification.objects.get(output=broken).state == "given_up"  # a test is not retried
        page = client.get("/alerts/").content.decode()
        assert "failing since" in page and "Connection refused" in page
        client.force_login(viewer)
        assert "Send a test alert" not in client.get("/alerts/").content.decode()
        assert client.post(f"/alerts/{out.pk}/test/").status_code == 403 and len(hook.received) == 1
        metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
        assert 'crossedge_alert_notifications_total{outcome="sent",output="soc-hook"} 1.0' in metrics
        assert 'crossedge_alert_failing{output="nowhere"} 1.0' in metrics
        assert 'crossedge_alert_failures_total{output="nowhere"} 1.0' in metrics
    finally:
        hook.stop()


def test_delivered_notifications_go_with_retention():
    out = output("hook", "webhook", "http://127.0.0.1:1/x")
    old = timezone.now() - dt.timedelta(days=8)
    for state in ("sent", "given_up", "queued"):
        Notification.objects.create(output=out, key=state, first_ts=old, last_ts=old, state=state, created_at=old)
    Notification.objects.create(output=out, key="new", first_ts=old, last_ts=old, state="sent")
    assert prune(days=7).notifications == 2
    assert sorted(Notification.objects.values_list("key", flat=True)) == ["new", "queued"]  # never an undelivered one
