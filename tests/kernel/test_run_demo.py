"""`make run DEMO=1` as a user gets it: dashboard, local agent over the agent protocol, and
the demo workload as separate processes; violations reach the API within 10 s of start."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from monitor.cgroups import cgroup2_mount

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.kernel


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env, *args, **kw):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True, **kw
    )


def api(port, path, key):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Token {key}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def test_up_with_demo_shows_violations_within_ten_seconds(kernel, tmp_path, cgroup_parent):
    pins = f"/sys/fs/bpf/{cgroup_parent.removesuffix('.slice')}"
    env = {
        **os.environ,
        "CROSSEDGE_PIN_ROOT": pins,
        "CROSSEDGE_VAR_DIR": str(tmp_path),
        "CROSSEDGE_ADMIN_PASSWORD": "pw-e2e-123",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    manage(env, "migrate", "--noinput")
    manage(env, "ensureadmin")
    key = manage(env, "apitoken", "admin", "e2e").stdout.strip()
    port = free_port()
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        found = {}
        while time.monotonic() - started < 10 and len(found) < 2:
            time.sleep(0.5)
            try:
                rows = api(port, "/api/violations/?limit=50", key)["results"]
            except OSError:
                continue
            for row in rows:
                found.setdefault((row["container"]["name"], row["rule_id"], row["action"]), row)
            found = {
                k: v
                for k, v in found.items()
                if k in {("edge-app-staging", "rule-002", "deny"), ("edge-app-prod", "rule-001", "alert")}
            }
        assert set(found) == {("edge-app-staging", "rule-002", "deny"), ("edge-app-prod", "rule-001", "alert")}, (
            f"after {time.monotonic() - started:.1f}s found only {set(found)}"
        )
        row = found[("edge-app-staging", "rule-002", "deny")]
        assert (row["dest_ip"], row["dest_port"]) == ("127.0.0.2", 3306)
        deadline = time.monotonic() + 15  # the demo connects every 3 s; enforcement attaches in about 1 s
        while not any(r["enforced"] for r in api(port, "/api/violations/?rule=rule-002", key)["results"]):
            assert time.monotonic() < deadline, "no kernel-enforced rule-002 violation"
            time.sleep(0.5)
        deadline = time.monotonic() + 15  # a deny by name: refused in the kernel, shown with the name
        while not any(r["enforced"] and r["dest_name"] == "paste.bad.example"
                      for r in api(port, "/api/violations/?rule=rule-003", key)["results"]):  # fmt: skip
            assert time.monotonic() < deadline, "no kernel-enforced rule-003 (by name) violation"
            time.sleep(0.5)
        named = api(port, "/api/connections/?name=*.edge.example&limit=50", key)["results"]
        assert {r["dest_name"] for r in named} == {"api.edge.example", "updates.edge.example"}
        nodes = api(port, "/api/connections/?limit=1", key)["results"]
        assert nodes and nodes[0]["node"] == socket.gethostname()
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=30)[0]
    assert "demo stopped, cgroups removed" in output, output[-3000:]
    assert not os.path.exists(os.path.join(cgroup2_mount(), "crossedge-demo.slice"))
    assert not os.path.exists(f"{pins}-demo"), "the demo's pins were left behind"
