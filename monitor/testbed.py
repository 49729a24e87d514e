"""Simulated containers for the demo and the kernel tests.

The demo and the cheap kernel tests need no container engine, so a "container" here is
what the agent actually sees of one (tests/kernel/test_runtimes.py runs real Docker and
Podman): a cgroup2 directory named like a runtime scope
(`<parent>/docker-<64 hex>.scope`), Docker-style metadata giving it a name, and
processes that live in it. Everything is made under a parent cgroup of our own, never
the root, and `remove()` takes down only what `create()` and `spawn()` made.

`python -m monitor.testbed connect --every 3 127.8.8.8:80 ...` is the demo's client.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from .cgroups import cgroup2_mount, cgroup_id

_MADE_PARENTS: set[str] = set()  # parent cgroups this process created, removed once empty


class SimulatedContainer:
    def __init__(self, name: str, parent: str, docker_root: str, runtime_prefix: str = "docker"):
        if not parent or parent.strip("/") == "":
            raise ValueError("a simulated container needs a parent cgroup of its own, not the root")
        self.name = name
        self.id = hashlib.sha256(f"{parent}/{name}".encode()).hexdigest()
        self.parent_dir = os.path.join(cgroup2_mount(), parent.strip("/"))
        self.dir = os.path.join(self.parent_dir, f"{runtime_prefix}-{self.id}.scope")
        self.meta_dir = os.path.join(docker_root, "containers", self.id)
        self.procs: list[subprocess.Popen] = []

    @property
    def cgroup_path(self) -> str:
        return "/" + os.path.relpath(self.dir, cgroup2_mount())

    @property
    def cgroup_id(self) -> int:
        return cgroup_id(self.dir)

    def create(self) -> SimulatedContainer:
        if not os.path.isdir(self.parent_dir):
            os.mkdir(self.parent_dir)
            _MADE_PARENTS.add(self.parent_dir)
        os.makedirs(self.meta_dir, exist_ok=True)  # metadata first, as Docker writes it at create
        with open(os.path.join(self.meta_dir, "config.v2.json"), "w") as fh:
            json.dump({"ID": self.id, "Name": f"/{self.name}", "Config": {"Labels": {"crossedge.sim": "1"}}}, fh)
        os.makedirs(self.dir, exist_ok=True)
        return self

    def spawn(self, argv: list[str], **popen) -> subprocess.Popen:
        """Start a process inside this container's cgroup (it joins before it execs)."""
        procs_file = os.path.join(self.dir, "cgroup.procs")

        def join():
            with open(procs_file, "w") as fh:
                fh.write(str(os.getpid()))

        proc = subprocess.Popen(argv, preexec_fn=join, **popen)
        self.procs.append(proc)
        return proc

    def remove(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for _ in range(50):  # a reaped process leaves its cgroup a moment later
            try:
                os.rmdir(self.dir)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if self.parent_dir in _MADE_PARENTS:
            try:
                os.rmdir(self.parent_dir)
                _MADE_PARENTS.discard(self.parent_dir)
            except OSError:
                pass  # another container of ours still lives there
        shutil.rmtree(self.meta_dir, ignore_errors=True)

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.remove()


def connect_once(host: str, port: int) -> int:
    """One blocking TCP connect (so the kernel reports its final result, not EINPROGRESS);
    0 or the errno. Targets are on loopback or a test's own netns: they answer at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port))


def listen(host: str, port: int) -> socket.socket:
    """A loopback listener that accepts and closes, so connects to it succeed. Close it to stop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monitor.testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmd = sub.add_parser("connect", help="connect to each target, repeatedly")
    cmd.add_argument("targets", nargs="+", help="HOST:PORT, [V6]:PORT")
    cmd.add_argument("--every", type=float, default=0, help="seconds between rounds (0: one round)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    targets = [parse_target(t) for t in args.targets]
    while True:
        for host, port in targets:
            connect_once(host, port)
        if not args.every:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
