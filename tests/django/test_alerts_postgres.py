"""At scale, on PostgreSQL, several dashboard processes commit violation ids out of order:
the dispatcher (`manage.py alerts`, a process of its own as `up` runs it) still delivers a
violation whose id it had passed before it was committed."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.receivers import Webhook

ROOT = Path(__file__).resolve().parents[2]
LATE_COMMIT = """
import threading
from django.db import transaction
from dashboard.events.ingest import ingest_batch
from dashboard.fleet.models import Node
from dashboard.policy.models import Rule
from tests.django.conftest import agent_event
Rule.objects.create(rule_id="rule-001", action="alert", severity="high", dest_port="443")
def node(name):
    n = Node(name=name)
    n.token = n.issue_token()
    n.save()
    return n
slow, fast = node("edge-slow"), node("edge-fast")
begun, release = threading.Event(), threading.Event()
def late():  # its id is taken first, its commit comes last
    with transaction.atomic():
        ingest_batch(slow, [agent_event(1, comm="late")])
        begun.set()
        release.wait(30)
thread = threading.Thread(target=late)
thread.start()
begun.wait(30)
ingest_batch(fast, [agent_event(1, comm="early")])
import time; time.sleep(2)  # the dispatcher routes "early" and moves past "late"'s id
release.set()
thread.join()
print("committed")
"""


@pytest.mark.timeout(120)
def test_a_violation_committed_after_a_higher_id_is_still_delivered(tmp_path):
    db = os.environ.get("CROSSEDGE_TEST_DATABASE_URL")
    if not db:
        message = "CROSSEDGE_TEST_DATABASE_URL not set (make test starts PostgreSQL)"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    hook = Webhook().start()
    (tmp_path / "alerts.yaml").write_text(f"outputs:\n  - {{name: pg-hook, kind: webhook, target: '{hook.url}', "
                                          "dedupe_seconds: 0}\n")  # fmt: skip
    env = {**os.environ, "DATABASE_URL": db, "CROSSEDGE_VAR_DIR": str(tmp_path),
           "CROSSEDGE_ALERTS": str(tmp_path / "alerts.yaml")}  # fmt: skip

    def manage(*args, **kw):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True, **kw).stdout  # fmt: skip

    manage("migrate", "--noinput")
    manage("flush", "--noinput")
    dispatcher = subprocess.Popen([sys.executable, "manage.py", "alerts"], cwd=ROOT, env=env,
                                  stdout=open(tmp_path / "alerts.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115  # fmt: skip
    try:
        time.sleep(2)  # the dispatcher has read the outputs file and its cursor
        assert "committed" in manage("shell", "--no-imports", "-c", LATE_COMMIT, timeout=60)
        deadline = time.monotonic() + 10
        while len(hook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        comms = [b["crossedge"]["comm"] for b in hook.bodies()]
        assert comms == ["early", "late"], (tmp_path / "alerts.log").read_text()
        time.sleep(2)
        assert len(hook.received) == 2  # each once
        assert "committed out of id order" in (tmp_path / "alerts.log").read_text()
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)
        hook.stop()
        manage("flush", "--noinput")
