"""Who is acting: the signed-in user of a request (and the address it came from), a
command's own name ("cli: policy import FILE"), or "system".

Rule history and the audit trail both ask here, so a change is attributed the same way
from every entry point: the request middleware sets the actor for a request, commands set
their own around what they change.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Actor:
    name: str
    user_id: int | None = None
    address: str | None = None


SYSTEM = Actor("system")
_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("actor", default=None)


@contextlib.contextmanager
def acting_as(name: str, user_id: int | None = None, address: str | None = None):
    token = _actor.set(Actor(name[:150], user_id, address))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> Actor:
    return _actor.get() or SYSTEM


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or for a trusted proxy the address it forwarded.
    A request a proxy we were not told to trust forwarded gives "" (its address says nothing
    about the client, and must not pass as loopback)."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if forwarded is None:
        return remote
    if remote in settings.TRUSTED_PROXIES:
        return forwarded.split(",")[-1].strip()  # what the trusted proxy appended
    return ""


def recorded_address(request) -> str | None:
    """The address the audit trail keeps: the client's, else the untrusted proxy's."""
    return client_address(request) or request.META.get("REMOTE_ADDR") or None


class ActorMiddleware:
    """What a request changes is recorded as its signed-in user's, from its address."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        address = recorded_address(request)
        if user is not None and user.is_authenticated:
            with acting_as(user.get_username(), user.pk, address):
                return self.get_response(request)
        with acting_as(current_actor().name, None, address):
            return self.get_response(request)
