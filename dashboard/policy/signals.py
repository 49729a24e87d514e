"""Every change to a rule, from the admin, the importer or the shell, bumps the policy version."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .distribution import bump_version
from .models import Rule


@receiver(post_save, sender=Rule)
@receiver(post_delete, sender=Rule)
def rule_changed(sender, **kwargs):
    bump_version()
