"""Enforcement outlives the agent: SIGKILL leaves it working, a restarted agent adopts it
without a second attachment, denials while it was down are counted, and --uninstall
leaves no pins and no attachments."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from monitor.kernel import bpftool
from monitor.kernel.enforcer import PROGRAMS, TRACING

from .conftest import ROOT, connect_from

pytestmark = pytest.mark.kernel
EPERM = 1
POLICY = """version: '1.0'
rules:
  - id: deny-5
    match: {dest_ip: 127.10.10.5/32}
    action: deny
"""


def manage(*args):
    return [sys.executable, str(ROOT / "manage.py"), *args]


def wait_for(check, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s")


def ours_attached(cgroup_dir):
    return sorted(p["name"] for p in bpftool.cgroup_show(cgroup_dir) if p["name"].startswith("crossedge_"))


def tracing_prog_ids(pin_root):
    """The pinned container lifecycle programs' ids."""
    return {bpftool.prog_show(p)["id"] for name in TRACING for p in glob.glob(f"{pin_root}/gen-*/progs/{name}")}


def linked_prog_ids():
    return {link["prog_id"] for link in bpftool.run("link", "show") or []}


def tracer_pids(pin_root):
    out = subprocess.run(["pgrep", "-f", pin_root], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_sigkill_restart_adopt_and_uninstall(enforcement, targets, tmp_path):
    app = enforcement.container("edge-app-prod")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    args = [
        "runagent",
        "--policy",
        str(policy),
        "--pin-root",
        enforcement.pin_root,
        "--enforce-scope",
        f"/{enforcement.parent}/*",
        "--docker-root",
        str(tmp_path),
    ]
    agents = []

    def start():
        log = open(tmp_path / f"agent{len(agents)}.log", "w")  # noqa: SIM115 (closed with the process)
        agents.append(subprocess.Popen(manage(*args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        return agents[-1]

    try:
        first = start()
        wait_for(lambda: connect_from(app, "127.10.10.5", targets.port) == EPERM, what="enforcement")
        assert connect_from(app, "127.8.8.8", targets.port) == 0

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        wait_for(lambda: not tracer_pids(enforcement.pin_root), 5, "event pipe reader gone with the agent")
        for _ in range(3):  # denied while no agent runs: still refused, still counted
            assert connect_from(app, "127.10.10.5", targets.port) == EPERM

        status = json.loads(
            subprocess.run(
                manage("runagent", "--status", "--pin-root", enforcement.pin_root),
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert status["counters"]["deny-5"] == 4 and status["attached"] == [os.path.dirname(app.dir)]

        second = start()
        wait_for(lambda: "adopting pinned enforcement" in (tmp_path / "agent1.log").read_text(), what="adoption")
        wait_for(lambda: "kernel holds policy 1" in (tmp_path / "agent1.log").read_text(), what="policy reconciled")
        assert ours_attached(os.path.dirname(app.dir)) == sorted(PROGRAMS)  # not a second copy
        lifecycle = tracing_prog_ids(enforcement.pin_root)
        assert len(lifecycle) == len(TRACING) and lifecycle <= linked_prog_ids()  # attached, and stay so
        assert connect_from(app, "127.10.10.5", targets.port) == EPERM
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        assert connect_from(app, "127.10.10.5", targets.port) == EPERM  # a clean stop keeps it too

        done = subprocess.run(
            manage("runagent", "--uninstall", "--pin-root", enforcement.pin_root),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"detached {len(PROGRAMS)} program(s), removed 1 pinned generation(s)" in done.stdout
        assert not os.path.exists(enforcement.pin_root)
        assert not lifecycle & linked_prog_ids()  # their links went with the pins
        assert ours_attached(os.path.dirname(app.dir)) == []
        assert connect_from(app, "127.10.10.5", targets.port) == 0
    finally:
        for proc in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
