"""Delivering one notification to one output: webhook, syslog, Alertmanager, email.

Each sender gets the output and the notification's message (`message()`), and either
returns or raises DeliveryError with what went wrong; retrying is the dispatcher's.
HTTP goes through urllib (the stdlib client is enough for one POST); email through
Django's configured mail backend. RFC 5424 is a one-line format with one escaping rule,
written here rather than pulled in as a dependency.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
import socket
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.conf import settings
from django.core.mail import BadHeaderError, get_connection, send_mail

from .models import SYSLOG_FACILITIES, Output, split

# RFC 5424 severities for ours: critical -> crit, high -> err, medium -> warning, low -> notice
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
SD_ID = "crossedge@32473"  # 32473: the private enterprise number RFC 5612 sets aside for examples
USER_AGENT = "CrossEdge-alerts/1"


class DeliveryError(Exception):
    """A delivery failed; `permanent` when the output refused it for good (an HTTP 4xx, a
    header it cannot carry, an SMTP 5xx): retrying would only hold up the ones behind it."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


RETRYABLE_4XX = (408, 425, 429)  # timeout, too early, too many requests: worth another try

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: in a name
# from a container they could end a header or a line, or start a new one.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {0x2028: "\\u2028", 0x2029: "\\u2029"}
_CONTROL |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def inert(value) -> str:
    """One line whatever a container put in it: control characters written as escapes."""
    return str(value).translate(_CONTROL)


def slack_escaped(text: str) -> str:
    """Slack's and Mattermost's three escapes: `<!channel>`, `<url|text>` shown, not acted on."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(notification) -> dict:
    """What every output says: the violation's fields, how many calls, over which period."""
    alert = dict(notification.summary)
    alert["count"] = notification.count
    alert["first_ts"] = notification.first_ts.isoformat()
    alert["last_ts"] = notification.last_ts.isoformat()
    alert["test"] = notification.test
    alert["text"] = inert(text(alert))
    alert["url"] = settings.PUBLIC_URL.rstrip("/") + "/events/?" + urlencode({"rule": alert.get("rule_id", "")})
    return alert


def text(alert: dict) -> str:
    if alert["test"]:
        return f"[CrossEdge] test alert from the dashboard ({alert.get('description') or 'delivery check'})"
    who = alert.get("container_name") or f"{alert.get('comm', '?')}[{alert.get('pid', '?')}]"
    if alert.get("enforced"):
        outcome = "refused in the kernel"
    elif alert.get("audit"):
        outcome = "audit: let through"
    elif alert.get("unenforced"):
        outcome = f"NOT enforced: {alert['unenforced']}"
    else:
        outcome = "let through" if alert.get("action") == "deny" else "alert"
    count = alert["count"]
    times = f"{count} times from {alert['first_ts'][:19]} to {alert['last_ts'][:19]}" if count > 1 else "once"
    return (
        f"[CrossEdge] {alert.get('severity')} {alert.get('action')}: rule {alert.get('rule_id')} - {who} on "
        f"{alert.get('node')} -> {alert.get('target')} ({outcome}), {times}"
    )


def deliver(output: Output, notification) -> None:
    SENDERS[output.kind](output, message(notification))


def _post(url: str, body, timeout: float) -> None:
    if urlsplit(url).scheme not in ("http", "https"):  # checked at save too: never file:// or the like
        raise DeliveryError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked above)
            response.read(65536)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode(errors="replace").strip()
        permanent = 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX
        raise DeliveryError(
            f"HTTP {exc.code} from {urlsplit(url).netloc}: {inert(detail or exc.reason)}", permanent
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{urlsplit(url).netloc}: {reason}") from None


def webhook(output: Output, alert: dict) -> None:
    """JSON with a top-level `text` (what Slack and Mattermost incoming webhooks show) and the
    whole alert under `crossedge` for anything that reads fields."""
    _post(output.target, {"text": slack_escaped(alert["text"]), "crossedge": alert}, output.timeout_seconds)


def alertmanager(output: Output, alert: dict) -> None:
    """POST /api/v2/alerts. Labels identify the alert (Alertmanager groups and dedupes on
    them); the count and the text go in annotations. No endsAt: Alertmanager resolves it
    after its resolve_timeout unless it fires again."""
    labels = {
        "alertname": "CrossEdgeTest" if alert["test"] else "CrossEdgeViolation",
        "rule": alert.get("rule_id", ""),
        "severity": alert.get("severity", ""),
        "action": alert.get("action", ""),
        "node": alert.get("node", ""),
        "container": alert.get("container_name", ""),
    }
    body = [
        {
            "labels": {k: inert(v) for k, v in labels.items() if v},
            "annotations": {
                "summary": alert["text"],
                "description": inert(alert.get("description", "")),
                "count": str(alert["count"]),
                "target": inert(alert.get("target", "")),
            },
            "startsAt": alert["first_ts"],
            "generatorURL": alert["url"],
        }
    ]
    _post(output.target.rstrip("/") + "/api/v2/alerts", body, output.timeout_seconds)


def _sd_value(value) -> str:
    return inert(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_line(output: Output, alert: dict, now: dt.datetime | None = None) -> bytes:
    """One RFC 5424 message: header, one structured-data element with the alert's fields, text."""
    facility = SYSLOG_FACILITIES[dict(parse_qsl(urlsplit(output.target).query)).get("facility", "local0")]
    pri = facility * 8 + SYSLOG_SEVERITY.get(alert.get("severity"), 4)
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")
    params = {k: alert.get(k, "") for k in ("rule_id", "action", "severity", "node", "container_name", "target")}
    params |= {"count": alert["count"], "first": alert["first_ts"], "last": alert["last_ts"]}
    sd = f"[{SD_ID} " + " ".join(f'{k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    host = socket.gethostname()[:255] or "-"
    msgid = "test" if alert["test"] else "violation"
    return f"<{pri}>1 {stamp} {host} crossedge - {msgid} {sd} \ufeff{alert['text']}".encode()


def syslog(output: Output, alert: dict) -> None:
    """UDP: one datagram per message. TCP: octet-counted framing (RFC 6587), a fresh
    connection per delivery, so a restarted listener is reached again."""
    parts = urlsplit(output.target)
    line = syslog_line(output, alert)
    try:
        if parts.scheme == "udp":
            with socket.socket(socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(line, (parts.hostname, parts.port))
        else:
            with socket.create_connection((parts.hostname, parts.port), timeout=output.timeout_seconds) as s:
                s.sendall(f"{len(line)} ".encode() + line)
    except OSError as exc:
        raise DeliveryError(f"syslog {parts.scheme}://{parts.hostname}:{parts.port}: {exc}") from None


def email(output: Output, alert: dict) -> None:
    subject = alert["text"][:150]
    lines = [alert["text"], ""] + [f"{k}: {inert(alert[k])}" for k in sorted(alert) if k not in ("text", "container")]
    try:
        connection = get_connection(timeout=output.timeout_seconds)
        send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, split(output.target), connection=connection)
    except (BadHeaderError, ValueError) as exc:  # a header it cannot carry: it never will
        raise DeliveryError(f"email: {inert(exc)}", permanent=True) from None
    except smtplib.SMTPResponseException as exc:  # 5xx: refused for good; 4xx: try again
        raise DeliveryError(f"email: {exc.smtp_code} {inert(exc.smtp_error)}", permanent=exc.smtp_code >= 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(f"email: recipients refused {codes}", permanent=all(c >= 500 for c in codes)) from None
    except Exception as exc:  # socket errors, a backend's own
        raise DeliveryError(f"email: {inert(exc)}") from None


SENDERS = {"webhook": webhook, "syslog": syslog, "alertmanager": alertmanager, "email": email}
