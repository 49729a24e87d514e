"""What the trail records without the acting code asking: sign-ins, password changes, rule
changes (every entry point writes a RuleChange), node enrolment, token and revocation
changes (admin, commands, the local agent), and everything else saved in the admin."""

from __future__ import annotations

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from dashboard.fleet.models import Node
from dashboard.policy.models import RuleChange

from .actor import Actor, current_actor, recorded_address
from .trail import record

ADMIN_ACTIONS = {ADDITION: "admin_added", CHANGE: "admin_changed", DELETION: "admin_deleted"}
COVERED = {("policy", "rule"), ("fleet", "node"), ("audit", "auditentry")}  # recorded by their own receivers
NODE_FIELDS = {"token_hash", "revoked"}


def _who(request, user=None, name: str = "") -> Actor:
    address = recorded_address(request) if request is not None else current_actor().address
    if user is not None:
        return Actor(user.get_username(), user.pk, address)
    return Actor(name[:150] or "anonymous", None, address)


@receiver(user_logged_in)
def logged_in(sender, request, user, **kwargs):
    record("login", user.get_username(), actor=_who(request, user))


@receiver(user_login_failed)
def login_failed(sender, credentials, request=None, **kwargs):
    name = str(credentials.get("username", ""))
    record("login_failed", name, actor=_who(request, name=name))


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs):
    if user is not None:
        record("logout", user.get_username(), actor=_who(request, user))


@receiver(pre_save, sender=get_user_model())
def password_change(sender, instance, update_fields=None, **kwargs):
    if not instance.pk or (update_fields is not None and "password" not in update_fields):
        return
    old = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if old is not None and old != instance.password:
        record("password_changed", instance.get_username())


@receiver(post_save, sender=RuleChange)
def rule_changed(sender, instance, created, **kwargs):
    if created:
        fields = [name for name, _, _ in instance.changed_fields()] if instance.action == "changed" else []
        actor = Actor(instance.actor, instance.user_id, current_actor().address)
        record(f"rule_{instance.action}", instance.rule_id, actor=actor, **({"fields": fields} if fields else {}))


@receiver(pre_save, sender=Node)
def node_before(sender, instance, update_fields=None, **kwargs):
    instance._audit_before = None
    if instance.pk and (update_fields is None or NODE_FIELDS & set(update_fields)):
        instance._audit_before = sender.objects.filter(pk=instance.pk).values("token_hash", "revoked").first()


@receiver(post_save, sender=Node)
def node_after(sender, instance, created, **kwargs):
    if created:
        record("node_enrolled", instance.name)
        return
    before = getattr(instance, "_audit_before", None)
    if not before:
        return
    if before["token_hash"] != instance.token_hash:
        record("node_token_issued", instance.name)
    if before["revoked"] != instance.revoked:
        record("node_revoked" if instance.revoked else "node_restored", instance.name)


@receiver(post_delete, sender=Node)
def node_deleted(sender, instance, **kwargs):
    record("node_deleted", instance.name)


@receiver(post_save, sender=LogEntry)
def admin_logged(sender, instance, created, **kwargs):
    content_type = instance.content_type
    if not created or content_type is None or (content_type.app_label, content_type.model) in COVERED:
        return
    record(
        ADMIN_ACTIONS.get(instance.action_flag, "admin_changed"),
        f"{content_type.name} {instance.object_repr}",
        change=instance.get_change_message(),
    )
