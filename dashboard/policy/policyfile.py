"""Policy files in the seed's YAML format: strict loading, and export.

The loader is PyYAML's safe loader made stricter for a security policy: no aliases or
anchors (expansion bombs), no duplicate keys (a second `action:` must not silently win),
no tags beyond plain YAML, and a size cap. Every rule then goes through the engine's
schema check. Errors name the file, the rule and the field.
"""

from __future__ import annotations

import yaml

from monitor.rules import Rule, RuleError, parse_rule

from . import checks

FORMAT_VERSIONS = ("1.0", "1")
TOP_KEYS = ("version", "description", "rules")  # the seed's default_policy.yaml has a description


class PolicyFileError(ValueError):
    def __init__(self, source: str, message: str):
        self.source, self.message = source, message
        super().__init__(f"{source}: {message}")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, anchors, explicit tags or duplicate keys."""

    what = "policy files"  # for the messages: what is being read

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(None, None, f"aliases are not allowed in {self.what}", mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.MarkedYAMLError(None, None, f"anchors are not allowed in {self.what}", event.start_mark)
        if getattr(event, "tag", None) is not None:  # explicit tags (!!str, !!map, !x): plain YAML only
            message = f"tags are not allowed in {self.what} ({event.tag})"
            raise yaml.MarkedYAMLError(None, None, message, event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.MarkedYAMLError(
                    None, None, "mapping keys must be plain scalars", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.MarkedYAMLError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def loads(text: str | bytes, source: str = "<policy>", max_bytes: int = 1 << 20) -> list[Rule]:
    """Parse and validate a whole policy file; PolicyFileError on the first problem."""
    if len(text) > max_bytes:
        raise PolicyFileError(source, f"file is {len(text)} bytes, larger than the {max_bytes}-byte limit")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyFileError(source, f"not UTF-8 text ({exc})") from None
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise PolicyFileError(source, f"invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyFileError(source, "top level must be a mapping with a 'rules' list")
    unknown = sorted(set(doc) - set(TOP_KEYS), key=str)
    if unknown:
        raise PolicyFileError(source, f"unknown top-level key {unknown[0]!r} (allowed: {', '.join(TOP_KEYS)})")
    if not isinstance(doc.get("description", ""), str):
        raise PolicyFileError(source, "'description' must be a string")
    if "version" in doc and str(doc["version"]) not in FORMAT_VERSIONS:
        raise PolicyFileError(source, f"unsupported format version {doc['version']!r} (this is 1.0)")
    if "rules" not in doc:
        raise PolicyFileError(source, "missing 'rules' key")
    if not isinstance(doc["rules"], list):
        raise PolicyFileError(source, "'rules' must be a list")
    rules, seen = [], set()
    for index, item in enumerate(doc["rules"]):
        try:
            rule = parse_rule(item, order=index, where=f"#{index + 1}")
        except RuleError as exc:
            raise PolicyFileError(source, str(exc)) from None
        if rule.id in seen:
            raise PolicyFileError(source, f"rule {rule.id!r}: id: used by more than one rule")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def check(rules: list[Rule], source: str = "<policy>") -> list[str]:
    """The warnings for a rule set about to be saved (checks.warnings); PolicyFileError for a
    deny the kernel could not hold (checks.unenforceable), naming the rule and the field."""
    for rule in rules:
        if problem := checks.unenforceable(rule):
            raise PolicyFileError(source, f"rule {rule.id!r}: match.{problem[0]}: {problem[1]}")
    return checks.warnings(rules)


def dumps(specs: list[dict]) -> str:
    return yaml.safe_dump({"version": "1.0", "rules": specs}, sort_keys=False, allow_unicode=True)
