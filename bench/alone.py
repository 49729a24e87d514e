"""One bench at a time on a machine.

Every figure here is a ratio of arms measured side by side on the same CPUs; a second bench
(and the product it starts) running meanwhile takes CPU from both arms unevenly and makes
the figures meaningless without saying so. That happened once (two alert benches overlapped
and reported alert p99s several times the real one), so each bench takes an exclusive lock
first and refuses to start while another holds it. The lock goes with the process.
"""

from __future__ import annotations

import fcntl
import os
import sys

LOCK = os.environ.get("CROSSEDGE_BENCH_LOCK", "/tmp/crossedge-bench.lock")  # noqa: S108 (one per machine, on purpose)
_held = []  # the open lock file, for the life of the process


def alone() -> None:
    """Take the machine's bench lock, or exit saying which process holds it."""
    try:
        fh = open(LOCK, "a+")  # noqa: SIM115 (held until the process ends)
    except PermissionError:  # another user's lock file: lock it all the same, unlabelled
        fh = open(LOCK)  # noqa: SIM115
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        sys.exit(f"another bench is running ({holder}, holding {LOCK}): wait for it, or both sets of figures are "
                 "disturbed")  # fmt: skip
    if fh.writable():
        fh.truncate(0)
        fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        fh.flush()
    _held.append(fh)
