"""Outputs from a YAML file (CROSSEDGE_ALERTS), for deployments configured without a browser.

    outputs:
      - name: soc
        kind: webhook            # webhook | syslog | alertmanager | email
        target: https://hooks.example/T000/B000
        min_severity: high       # routing, all optional: min_severity, rules, tags,
        rules: [deny-*]          #   nodes, containers (lists or comma-separated),
        dedupe_seconds: 60       #   actions, dedupe_seconds, timeout_seconds, enabled

The file is the truth for the outputs it names (marked `from_env`, read-only in the admin):
they are created or updated, and those it no longer names removed. A bad file changes
nothing and says where it is wrong.
"""

from __future__ import annotations

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from dashboard.policy.policyfile import StrictLoader

from .models import Output

FIELDS = {"name", "kind", "target", "enabled", "min_severity", "rules", "tags", "nodes", "containers", "actions",
          "dedupe_seconds", "timeout_seconds"}  # fmt: skip
LISTS = ("rules", "tags", "nodes", "containers", "actions")


class ConfigError(ValueError):
    pass


class OutputsLoader(StrictLoader):
    what = "alert output files"


def parse(text: str, source: str = "CROSSEDGE_ALERTS") -> list[Output]:
    """Validated, unsaved outputs; ConfigError naming the output and field at the first problem."""
    try:
        data = yaml.load(text, Loader=OutputsLoader)  # noqa: S506 (a SafeLoader, made stricter)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"outputs"} or not isinstance(data["outputs"], list):
        raise ConfigError(f"{source}: expected a mapping with one key, `outputs:`, holding a list")
    outputs, names = [], set()
    for index, spec in enumerate(data["outputs"]):
        where = f"{source}: outputs[{index}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping")
        if unknown := set(spec) - FIELDS:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        spec = dict(spec)
        for name in LISTS:
            if isinstance(spec.get(name), list):
                spec[name] = ",".join(str(item) for item in spec[name])
        output = Output(**spec, from_env=True)
        where = f"{source}: output {spec.get('name', index)!r}"
        if output.name in names:
            raise ConfigError(f"{where}: named twice")
        names.add(output.name)
        try:
            output.full_clean(validate_unique=False)
        except ValidationError as exc:
            fields = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            raise ConfigError(f"{where}: {fields}") from None
        outputs.append(output)
    return outputs


def apply(outputs: list[Output]) -> dict:
    """Make the database's file-managed outputs these; an admin-made output of the same name
    is refused rather than taken over."""
    with transaction.atomic():
        clash = Output.objects.filter(name__in=[o.name for o in outputs], from_env=False).values_list("name", flat=True)
        if clash:
            raise ConfigError(f"CROSSEDGE_ALERTS names outputs made in the admin: {', '.join(clash)}; rename one")
        have = {o.name: o for o in Output.objects.filter(from_env=True)}
        created = updated = 0
        for output in outputs:
            if output.name in have:
                output.pk = have.pop(output.name).pk
                output.save()
                updated += 1
            else:
                output.save()
                created += 1
        removed = Output.objects.filter(pk__in=[o.pk for o in have.values()]).delete()[1].get("alerts.Output", 0)
    return {"created": created, "updated": updated, "removed": removed}
