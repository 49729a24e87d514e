"""The two roles, as Django groups kept in step after every migrate.

viewers:      sign in and read every page and feed; change nothing (not staff).
rule editors: also edit, import and promote rules in the admin (staff + rule permissions),
              and read the rule history.
Administrators (superusers) manage nodes, users and tokens.
"""

from django.contrib.auth.models import Group, Permission

VIEWERS = "viewers"
EDITORS = "rule editors"
EDITOR_PERMISSIONS = ("add_rule", "change_rule", "delete_rule", "view_rule", "view_rulechange")


def ensure_roles(**kwargs) -> None:
    Group.objects.get_or_create(name=VIEWERS)
    editors, _ = Group.objects.get_or_create(name=EDITORS)
    perms = Permission.objects.filter(content_type__app_label="policy", codename__in=EDITOR_PERMISSIONS)
    editors.permissions.set(perms)


def can_edit_rules(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm("policy.change_rule")
