"""Logging out closes that session's live feeds at once."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from .feeds import session_group


@receiver(user_logged_out)
def close_feeds(sender, request, user, **kwargs):
    key = request.session.session_key if request is not None else None
    layer = get_channel_layer()
    if key and layer is not None:
        async_to_sync(layer.group_send)(session_group(key), {"type": "session.ended"})
