"""Named fixtures for dashboard tests: nodes, users, and agent events as agents send them."""

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group

from dashboard.fleet.models import Node
from dashboard.policy.roles import EDITORS, VIEWERS

_seq = itertools.count(1)


def enrolled(name: str) -> Node:
    """A node with a token (on `.token`), as `manage.py enrol` makes it."""
    n = Node(name=name)
    n.token = n.issue_token()
    n.save()
    return n


@pytest.fixture
def node(db):
    return enrolled("edge-1")


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("val", "", "pw-viewer-123")
    user.groups.add(Group.objects.get(name=VIEWERS))
    return user


@pytest.fixture
def editor(django_user_model):
    user = django_user_model.objects.create_user("eddie", "", "pw-editor-123", is_staff=True)
    user.groups.add(Group.objects.get(name=EDITORS))
    return user


@pytest.fixture
def postgres(tmp_path):
    """The dashboard's commands against the test PostgreSQL (`make test` starts it; in CI its
    absence fails the test): `env` for processes of the test's own, `manage(*args)` for its
    output; the database migrated and flushed before and after."""
    db = os.environ.get("CROSSEDGE_TEST_DATABASE_URL")
    if not db:
        message = "CROSSEDGE_TEST_DATABASE_URL not set (make test starts PostgreSQL)"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    env = {**os.environ, "DATABASE_URL": db, "CROSSEDGE_VAR_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]

    def manage(*args, timeout=150):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=root, env=env, check=True,
                              capture_output=True, text=True, timeout=timeout).stdout  # fmt: skip

    manage("migrate", "--noinput")
    manage("flush", "--noinput")
    yield SimpleNamespace(env=env, manage=manage, root=root)
    manage("flush", "--noinput")


def agent_event(seq=None, **overrides):
    """One event shaped exactly like the agent's pipeline emits it."""
    event = {
        "seq": seq if seq is not None else next(_seq),
        "kind": "connect",
        "ts_ns": time.time_ns(),
        "pid": 4242,
        "tid": 4242,
        "uid": 0,
        "gid": 0,
        "cgroup_id": 7519,
        "cgroup_path": "/system.slice/docker-" + "ab" * 32 + ".scope",
        "family": 4,
        "dest_ip": "127.10.10.5",
        "dest_port": 443,
        "result": 0,
        "comm": "curl",
        "container": {
            "runtime": "docker",
            "id": "ab" * 32,
            "name": "edge-app-prod",
            "pod_uid": "",
            "image": "edge/app:1.4",
            "labels": {"app": "edge"},
        },
        "op": "connect",
        "verdict": "alert",
        "rule_id": "rule-001",
        "severity": "high",
        "policy_version": 1,
    }
    event.update(overrides)
    return event


def flood(seq, **overrides):
    """A flood report shaped as the agent sends it (a source's SYNs over a flood rule)."""
    return {"seq": seq, "kind": "flood", "ts_ns": 1_795_000_000 * 10**9, "source_ip": "198.18.0.1", "family": 4,
            "dest_port": 443, "syns": 1000, "rule_id": "syn-flood", "verdict": "deny", "severity": "high",
            "enforced": True, "audit": False, "hold": 300, "policy_version": 3} | overrides  # fmt: skip
