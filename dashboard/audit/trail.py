"""`record`: one line in the audit trail, attributed to whoever is acting (audit.actor)."""

from __future__ import annotations

from .actor import Actor, current_actor
from .models import AuditEntry


def record(action: str, target: str = "", actor: Actor | None = None, **detail) -> AuditEntry:
    who = actor or current_actor()
    return AuditEntry.objects.create(
        actor=who.name[:150], user_id=who.user_id, address=who.address or None, action=action,
        target=str(target)[:300], detail=detail,
    )  # fmt: skip
