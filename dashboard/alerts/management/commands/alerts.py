"""`manage.py alerts`: the alert dispatcher (run by `manage.py up`), or `--check FILE`."""

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.alerts import config
from dashboard.alerts.dispatcher import Dispatcher


class Command(BaseCommand):
    help = (
        "Route new violations to the alert outputs (admin, or the YAML file CROSSEDGE_ALERTS names), fold storms "
        "into one notification per dedupe window, deliver with retries. Runs until SIGTERM or Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", metavar="FILE", help="validate an outputs file and exit (changes nothing)")

    def handle(self, *args, **opts):
        if opts["check"]:
            outputs = self.load(opts["check"])
            self.stdout.write(f"{opts['check']}: {len(outputs)} output(s), valid")
            return
        if settings.ALERTS_FILE:
            done = config.apply(self.load(settings.ALERTS_FILE))
            self.stdout.write(
                f"outputs from {settings.ALERTS_FILE}: {done['created']} created, {done['updated']} updated, "
                f"{done['removed']} removed"
            )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.stdout.write("alerts: routing violations to the enabled outputs")
        Dispatcher().run(stop)

    def load(self, path: str):
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            return config.parse(text, path)
        except config.ConfigError as exc:
            raise CommandError(str(exc)) from None
