"""Changes to the rule set that more than one entry point makes (command, admin page)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from dashboard.audit.trail import record
from monitor.rules import Rule as EngineRule

from . import policyfile
from .models import Rule

MODES = ("merge", "replace")


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __str__(self):
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, {self.deleted} deleted"


def import_rules(rules: list[EngineRule], mode: str = "merge", dry_run: bool = False, source: str = "") -> ImportResult:
    """Apply validated rules in one transaction: all of them, or (on any error) none.

    merge keeps rules the file does not name; replace deletes them.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    result = ImportResult()
    with transaction.atomic():
        existing = {r.rule_id: r for r in Rule.objects.select_for_update()}
        for rule in rules:
            row = existing.get(rule.id) or Rule()
            before = row.to_spec() if row.pk else None
            row.set_from(rule)
            if before == row.to_spec():
                result.unchanged += 1
                continue
            row.full_clean()
            row.save()
            if before is None:
                result.created += 1
            else:
                result.updated += 1
        if mode == "replace":
            names = {r.id for r in rules}
            stale = [row for rid, row in existing.items() if rid not in names]
            for row in stale:
                row.delete()
            result.deleted = len(stale)
        if dry_run:
            transaction.set_rollback(True)
        else:
            record("policy_imported", source, mode=mode, rules=len(rules), result=str(result))
    return result


def export_policy(where: str) -> str:
    """The rule set as a policy file; the export is recorded in the audit trail."""
    specs = [r.to_spec() for r in Rule.objects.all()]
    record("policy_exported", where, rules=len(specs))
    return policyfile.dumps(specs)
