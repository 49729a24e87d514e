"""The benchmarks' loopback target: a listener in a process of its own, so that accepting
never waits on the benchmark's GIL (a full backlog would cost connects a 1 s SYN retry)."""

from __future__ import annotations

import subprocess
import sys

LISTENER = r"""
import socket
srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    conn.close()
"""


def start_listener() -> tuple[subprocess.Popen, int]:
    """The listener process and its port on 127.0.0.1; kill the process when done."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())
