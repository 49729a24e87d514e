"""What a rule set would promise that the nodes could not keep, checked when it is saved.

An exec or open deny must be judged in the kernel (monitor/kernel/patterns.py), else it is
only reported after the fact: such a deny is refused when saved, with how to write it. A
rule the agent judges (an alert, allow or audit rule with a glob the kernel cannot take)
is accepted, with a warning for each kernel deny below it that it would weaken: where both
match, the kernel's deny decides first. The agent itself still takes any valid rule (a
policy file run with `runagent --policy`, rules saved before these checks): it reports
such a deny as NOT enforced, with why.
"""

from __future__ import annotations

from monitor import rules as engine
from monitor.kernel import patterns


def unenforceable(rule: engine.Rule) -> tuple[str, str] | None:
    """(field, message) for an enforcing exec or open deny the kernel cannot judge, else None."""
    why = patterns.needs_agent(rule) if rule.action == "deny" and not rule.audit else ""
    if not why:
        return None
    bad = next(attr for attr, _ in patterns.FIELDS[rule.kind] if getattr(rule, attr) and why.startswith(f"its {attr}"))
    return bad, (f"a deny must hold in the kernel, and {why}: write it as a path (/usr/bin/nc), a prefix "
                 "(/dev/shm/*), a suffix (*/nc) or both (/usr/bin/*sh), or make it alert or mode audit")  # fmt: skip


def warnings(rules: list[engine.Rule], about: str | None = None) -> list[str]:
    """For each rule the agent judges, the kernel denies below it that it would weaken (only
    those naming rule `about`, if given)."""
    ordered = engine.RuleSet(rules).rules
    out = []
    for rank, rule in enumerate(ordered):
        if rule.kind not in patterns.FIELDS or not patterns.needs_agent(rule):
            continue
        below = [r.id for r in ordered[rank + 1 :] if r.kind == rule.kind and r.action == "deny" and not r.audit
                 and not patterns.needs_agent(r)]  # fmt: skip
        if below and (about is None or about == rule.id or about in below):
            out.append(
                f"rule {rule.id} is judged by the agent after the {rule.kind} ({patterns.needs_agent(rule)}): "
                f"where it and deny {', '.join(below)} below it both match, the deny decides in the kernel"
            )
    return out
