"""Retention on PostgreSQL: events past their age are rolled up and deleted, exactly those;
a size bound is not applied there (its sizes keep the space VACUUM freed and its row
statistics lag behind deletes, so no figure would stop the pruner at the right row), and
the pruner says so rather than pruning by a wrong figure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import datetime as dt, json
from django.utils import timezone
from dashboard.events.ingest import ingest_batch
from dashboard.events.models import ConnectionEvent, Rollup, Violation
from dashboard.events.retention import prune
from dashboard.fleet.models import Node
from tests.django.conftest import agent_event
node = Node(name="edge-pg")
node.token = node.issue_token()
node.save()
now = timezone.now()
def ts(days):
    return int((now - dt.timedelta(days=days)).timestamp() * 1e9)
ingest_batch(node, [agent_event(i, ts_ns=ts(10 - i * 0.5), dest_ip=f"127.5.0.{i}") for i in range(1, 13)])
done = prune(now, days=7, max_bytes=1, batch=2, duty=1)
kept = sorted(ConnectionEvent.objects.values_list("seq", flat=True))
rolled = sum(Rollup.objects.values_list("count", flat=True))
print(json.dumps({"deleted": done.events["connectionevent"], "batches": done.batches, "why": done.size_unbounded,
                  "kept": kept, "violations": Violation.objects.count(), "rolled": rolled}))
"""


@pytest.mark.timeout(180)
def test_age_retention_on_postgresql_and_the_size_bound_says_it_does_not_apply(tmp_path):
    db = os.environ.get("CROSSEDGE_TEST_DATABASE_URL")
    if not db:
        message = "CROSSEDGE_TEST_DATABASE_URL not set (make test starts PostgreSQL)"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    env = {**os.environ, "DATABASE_URL": db, "CROSSEDGE_VAR_DIR": str(tmp_path)}

    def manage(*args, check=True):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=check,
                              capture_output=True, text=True, timeout=150)  # fmt: skip

    manage("migrate", "--noinput")
    manage("flush", "--noinput")
    try:
        result = json.loads(manage("shell", "--no-imports", "-c", SCRIPT).stdout.splitlines()[-1])
        command = manage("prune", "--max-mb", "1")
    finally:
        manage("flush", "--noinput")
    # ages 9.5, 9, ... 4 days: the five older than 7 days go (batches of 2), with their violations
    assert result["deleted"] == 5 and result["batches"] == 3 and result["kept"] == list(range(6, 13))
    assert result["violations"] == 7 and result["rolled"] == 5
    assert "SQLite only" in result["why"]
    assert "warning: --max-mb: the size bound applies to SQLite only" in command.stderr
