"""Policy as agents receive it, and the nudge that tells connected agents to fetch it."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from .models import PolicyState, Rule

AGENTS_GROUP = "agents"


def current_policy() -> dict:
    with transaction.atomic():
        return {"type": "policy", "version": PolicyState.current(), "rules": [r.to_spec() for r in Rule.objects.all()]}


def bump_version() -> None:
    """Called inside the transaction that changed rules; agents hear of it after commit."""
    updated = PolicyState.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        PolicyState.objects.create(pk=1, version=1)
    transaction.on_commit(announce)


def announce() -> None:
    """Tell every connected agent consumer in this channel layer that the policy changed.

    An import that saved many rules announces many times, all with the final version;
    consumers push each version once.
    """
    version = PolicyState.current()
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(AGENTS_GROUP, {"type": "policy.changed", "version": version})
