"""One filter for events and violations, parsed once from a query string and applied in
SQL (search, API, feed backfill) or to a serialised row (the live feeds), so a filtered
feed and a filtered search always agree."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields

from django.db.models import Q
from django.utils.dateparse import parse_datetime

from monitor.dns import Pattern

ACTIONS = ("allow", "alert", "deny")
KINDS = ("connect", "exec", "exit", "open", "call", "scan", "flood", "limit", "dns", "socket")


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class EventFilter:
    node: str = ""
    container: str = ""  # name, or a container's numeric id
    rule: str = ""
    action: str = ""
    dest: str = ""  # an IP address
    name: str = ""  # the name the container resolved: api.example.com, *.example.com or none
    port: int | None = None
    event: str = ""  # the kind of event: connect, exec, exit or open
    path: str = ""  # part of an opened file's path
    since: object = None
    until: object = None

    @classmethod
    def parse(cls, params) -> EventFilter:
        values = {f.name: (params.get(f.name) or "").strip() for f in fields(cls)}
        if values["action"] and values["action"] not in ACTIONS:
            raise FilterError("action must be allow, alert or deny")
        if values["dest"]:
            try:
                values["dest"] = str(ipaddress.ip_address(values["dest"].strip("[]")))
            except ValueError:
                raise FilterError(f"dest must be an IP address, not {values['dest']!r}") from None
        if values["name"]:
            try:
                values["name"] = str(Pattern.parse(values["name"]))
            except ValueError as exc:
                raise FilterError(f"name: {exc} (e.g. api.example.com, *.example.com or none)") from None
        if values["event"] and values["event"] not in KINDS:
            raise FilterError(f"event must be one of {', '.join(KINDS)}")
        if len(values["path"]) > 1024:
            raise FilterError("path is too long")
        port = values.pop("port")
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise FilterError("port must be a number from 1 to 65535")
        times = {}
        for name in ("since", "until"):
            raw = values.pop(name)
            if raw:
                times[name] = parse_datetime(raw)
                if times[name] is None:
                    raise FilterError(f"{name} must be an ISO 8601 time, e.g. 2026-11-22T10:00:00Z")
        for name in ("node", "container", "rule"):
            if len(values[name]) > 255:
                raise FilterError(f"{name} is too long")
        return cls(**values, port=int(port) if port else None, **times)

    def __bool__(self):
        return any(getattr(self, f.name) not in ("", None) for f in fields(self))

    def apply(self, qs, action_field: str):
        """The queryset narrowed by every set field (each has an index that ends in -ts)."""
        if self.container:
            c = self.container
            qs = qs.filter(container_id=int(c)) if c.isdigit() else qs.filter(container__name=c)
        if self.node:
            qs = qs.filter(node__name=self.node)
        if self.rule:
            qs = qs.filter(rule_id=self.rule)
        if self.action:
            qs = qs.filter(**{action_field: self.action})
        if (self.dest or self.port or self.name) and not _has(qs.model, "dest_ip"):
            return qs.none()  # processes have no destination
        if self.event and _has(qs.model, "kind"):
            qs = qs.filter(kind=self.event)
        elif self.event and self.event != "connect":
            qs = qs.none()  # connections are all connects
        if self.path:
            qs = (
                qs.filter(path__contains=self.path) if _has(qs.model, "path") else qs.filter(target__contains=self.path)
            )
        if self.dest:
            qs = qs.filter(dest_ip=self.dest)
        if self.name:
            qs = qs.filter(named(Pattern.parse(self.name)))
        if self.port:
            qs = qs.filter(dest_port=self.port)
        if self.since:
            qs = qs.filter(ts__gte=self.since)
        if self.until:
            qs = qs.filter(ts__lt=self.until)
        return qs

    def matches(self, row: dict) -> bool:
        """The same test on a serialised feed row (see serializers.py)."""
        container = row.get("container") or {}
        if self.container and self.container not in (container.get("name"), str(container.get("id"))):
            return False
        if self.node and row.get("node") != self.node:
            return False
        if self.rule and row.get("rule_id") != self.rule:
            return False
        if self.action and (row.get("action") or row.get("verdict")) != self.action:
            return False
        if self.dest and row.get("dest_ip") != self.dest:
            return False
        if self.name and not Pattern.parse(self.name).matches(row.get("dest_name")):
            return False
        if self.port and row.get("dest_port") != self.port:
            return False
        if self.event and row.get("kind", "connect") != self.event:
            return False
        if self.path and self.path not in (row.get("path") or row.get("target") or ""):
            return False
        return True

    def query(self) -> dict:
        """The set fields as query parameters (for links and the feed's websocket URL)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in ("", None):
                out[f.name] = value.isoformat() if hasattr(value, "isoformat") else str(value)
        return out


def named(pattern: Pattern) -> Q:
    """The rows whose dest_name a name pattern matches (none: "", never resolved)."""
    if pattern.kind == "wild":
        return Q(dest_name__endswith=f".{pattern.name}")
    return Q(dest_name=pattern.name)


def _has(model, name: str) -> bool:
    return any(f.name == name for f in model._meta.get_fields())
