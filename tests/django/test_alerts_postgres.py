"""At scale, on PostgreSQL, several dashboard processes commit violation ids out of order:
the dispatcher (`manage.py alerts`, a process of its own as `up` runs it) still delivers a
violation whose id it had passed before it was committed."""

import subprocess
import sys
import time

import pytest

from tests.receivers import Webhook

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
def test_a_violation_committed_after_a_higher_id_is_still_delivered(postgres, tmp_path):
    hook = Webhook().start()
    (tmp_path / "alerts.yaml").write_text(f"outputs:\n  - {{name: pg-hook, kind: webhook, target: '{hook.url}', "
                                          "dedupe_seconds: 0}\n")  # fmt: skip
    env = {**postgres.env, "CROSSEDGE_ALERTS": str(tmp_path / "alerts.yaml")}
    dispatcher = subprocess.Popen([sys.executable, "manage.py", "alerts"], cwd=postgres.root, env=env,
                                  stdout=open(tmp_path / "alerts.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115  # fmt: skip
    try:
        time.sleep(2)  # the dispatcher has read the outputs file and its cursor
        assert "committed" in postgres.manage("shell", "--no-imports", "-c", LATE_COMMIT, timeout=60)
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
