"""Who changed which rule, when, from what to what.

Every save or delete of a Rule, from any entry point (admin form, change list, YAML
import, promotion, the shell), is recorded by the model signals. The actor comes from a
context variable: the request middleware sets it to the signed-in user, commands set
their own ("cli: policy import"); otherwise it is "system".
"""

from __future__ import annotations

import contextlib
import contextvars

_actor: contextvars.ContextVar[tuple[str, int | None]] = contextvars.ContextVar("rule_actor", default=("system", None))


@contextlib.contextmanager
def acting_as(name: str, user_id: int | None = None):
    token = _actor.set((name, user_id))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> tuple[str, int | None]:
    return _actor.get()


class ActorMiddleware:
    """Rule changes made during a request are recorded as the signed-in user's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            with acting_as(user.get_username(), user.pk):
                return self.get_response(request)
        return self.get_response(request)
