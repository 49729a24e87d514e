"""Every output has a status row from its creation, so the dispatcher only ever updates it."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Output, OutputStatus


@receiver(post_save, sender=Output)
def give_status(sender, instance, created, **kwargs):
    if created:
        OutputStatus.objects.get_or_create(output=instance)
