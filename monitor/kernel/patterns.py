"""Which exec and open rules the kernel can judge, and how (bpfscripts/path.bpf.h).

A field of a rule (the binary, the parent's binary, the opened path) is judged in the kernel
when its glob is a path ("/usr/bin/nc"), a prefix ("/dev/shm/*"), a suffix ("*/nc") or a
prefix and a suffix ("/bin/*sh"): one "*" (fnmatch's, which crosses "/", as the kernel's
match does), no "?" or "[". A rule is the kernel's when every field it names is; anything
else needs the agent, after the fact. The dashboard checks rules with the same functions
when they are saved (dashboard/policy/checks.py), so what it accepts is what nodes enforce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..rules import Rule
from .layout import MATCH_LEN

PATH_BYTES = MATCH_LEN - 1  # a pattern key's path: an exact path's NUL included
PRULES = 64  # CE_PRULES: rules per kind the kernel judges
# rule kind -> its fields, in the kernel's order (CE_F_*), as (rule attribute, field number)
FIELDS = {
    "exec": (("binary", 0), ("parent", 1)),
    "open": (("path", 2), ("binary", 3), ("parent", 4)),
}
KINDS = {"exec": 0, "open": 1}  # CE_K_*


@dataclass(frozen=True)
class Pattern:
    """A glob as the kernel takes it: an exact path, or a prefix and/or a suffix."""

    prefix: str
    suffix: str = ""
    exact: bool = False

    @property
    def min_len(self) -> int:
        """A prefix and a suffix match only a path long enough to hold both."""
        return len(self.prefix.encode()) + len(self.suffix.encode()) if self.prefix and self.suffix else 0

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.prefix
        return path.startswith(self.prefix) and path.endswith(self.suffix) and len(path) >= self.min_len


def kernel_pattern(glob: str) -> Pattern | None:
    """The kernel's form of a glob, or None if it needs the agent (or is too long for a key)."""
    glob = re.sub(r"\*+", "*", glob)
    if "?" in glob or "[" in glob or glob.count("*") > 1:
        return None
    if "*" not in glob:
        return Pattern(glob, exact=True) if len(glob.encode()) + 1 <= PATH_BYTES else None
    prefix, suffix = glob.split("*")
    if len(prefix.encode()) > PATH_BYTES or len(suffix.encode()) > PATH_BYTES:
        return None
    return Pattern(prefix, suffix)


def kernel_fields(rule: Rule) -> dict[int, Pattern] | None:
    """field number -> pattern for an exec or open rule the kernel can judge; None if some
    field needs the agent."""
    fields = {}
    for attr, number in FIELDS.get(rule.kind, ()):
        glob = getattr(rule, attr)
        if glob is None:
            continue
        pattern = kernel_pattern(glob)
        if pattern is None:
            return None
        fields[number] = pattern
    return fields


def needs_agent(rule: Rule) -> str:
    """Why an exec or open rule cannot be judged in the kernel ("" if it can)."""
    if rule.kind not in FIELDS or kernel_fields(rule) is not None:
        return ""
    bad = next(attr for attr, _ in FIELDS[rule.kind] if getattr(rule, attr) and not kernel_pattern(getattr(rule, attr)))
    return f"its {bad} is not a path, /dir/*, */name or /dir/*name (of at most {PATH_BYTES - 1} bytes)"


def exact_paths(ruleset) -> set[str]:
    """Every exact path an exec or open rule the kernel judges names (their files are also
    judged by identity)."""
    found = set()
    for rule in ruleset.rules:
        for pattern in (kernel_fields(rule) or {}).values():
            if pattern.exact:
                found.add(pattern.prefix)
    return found
