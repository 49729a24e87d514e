"""Every change to a rule, from the admin, the importer or the shell, bumps the policy
version and is recorded in the rule's history."""

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from dashboard.audit.actor import current_actor

from .distribution import bump_version
from .models import Rule, RuleChange


def _record(rule_id: str, action: str, before, after) -> None:
    who = current_actor()
    RuleChange.objects.create(rule_id=rule_id, action=action, actor=who.name, user_id=who.user_id, before=before,
                              after=after)  # fmt: skip


@receiver(pre_save, sender=Rule)
def remember_before(sender, instance, **kwargs):
    old = Rule.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._before = old.to_spec() if old else None


@receiver(post_save, sender=Rule)
def rule_saved(sender, instance, created, **kwargs):
    after = instance.to_spec()
    before = getattr(instance, "_before", None)
    if created or before is None:
        _record(instance.rule_id, "created", None, after)
    elif before != after:
        _record(instance.rule_id, "changed", before, after)
    bump_version()


@receiver(post_delete, sender=Rule)
def rule_deleted(sender, instance, **kwargs):
    _record(instance.rule_id, "deleted", instance.to_spec(), None)
    bump_version()
