"""`manage.py policy import FILE` / `manage.py policy export [FILE]`."""

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.audit.actor import acting_as
from dashboard.policy import actions, policyfile


class Command(BaseCommand):
    help = "Import or export the rule set as a YAML policy file (the seed format)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="load rules from FILE, all or nothing")
        imp.add_argument("file", help="policy YAML file, or - for standard input")
        imp.add_argument(
            "--mode",
            choices=actions.MODES,
            default="merge",
            help="merge (default) keeps rules the file does not name; replace deletes them",
        )
        imp.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
        exp = sub.add_parser("export", help="write the rule set as YAML to FILE (default: standard output)")
        exp.add_argument("file", nargs="?", default="-")

    def handle(self, *args, **opts):
        if opts["action"] == "import":
            self.do_import(opts["file"], opts["mode"], opts["dry_run"])
        else:
            self.do_export(opts["file"])

    def do_import(self, path, mode, dry_run):
        limit = settings.POLICY_MAX_BYTES
        try:
            if path == "-":
                data, source = sys.stdin.buffer.read(limit + 1), "<stdin>"
            else:
                with open(path, "rb") as fh:
                    data, source = fh.read(limit + 1), path
        except OSError as exc:
            raise CommandError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            rules = policyfile.loads(data, source, limit)
            warnings = policyfile.check(rules, source)
        except policyfile.PolicyFileError as exc:
            raise CommandError(f"{exc}; nothing was imported") from None
        for warning in warnings:
            self.stderr.write(f"{source}: warning: {warning}")
        with acting_as(f"cli: policy import {source}"[:150]):
            result = actions.import_rules(rules, mode, dry_run, source)
        prefix = "dry run, nothing changed: would be " if dry_run else ""
        self.stdout.write(f"{source}: {len(rules)} rules, {prefix}{result}")

    def do_export(self, path):
        text = actions.export_policy("standard output" if path == "-" else path)
        if path == "-":
            self.stdout.write(text, ending="")
            return
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write: {exc.strerror}") from None
        self.stderr.write(f"wrote {path}")
