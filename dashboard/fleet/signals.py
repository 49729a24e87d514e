"""A revoked node is cut off at once: its open agent connection is closed after the commit
(a new connection is refused by the token check anyway)."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Node


def cut_off(node_pk: int) -> None:
    """Close the node's live agent connection(s), if any, once the transaction commits."""

    def send():
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(f"node-{node_pk}", {"type": "node.revoked"})

    transaction.on_commit(send)


@receiver(post_save, sender=Node)
def node_saved(sender, instance, **kwargs):
    if instance.revoked:
        cut_off(instance.pk)
