"""cgroup id -> cgroup path on the cgroup2 hierarchy.

bpftrace's `cgroup` is the inode number of the caller's cgroup2 directory. We find the
cgroup2 mount in /proc/mounts (hybrid hosts mount it at /sys/fs/cgroup/unified), walk it
once, cache the ids, and walk again on a miss, at most once per `rescan_interval`, so a
storm of events from one vanished cgroup costs one walk, not one per event.
"""

from __future__ import annotations

import os
import time


def cgroup2_mount(mounts_file: str = "/proc/mounts") -> str:
    """The cgroup2 mount point; RuntimeError when the host has none."""
    with open(mounts_file) as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
    raise RuntimeError("no cgroup2 filesystem is mounted (see /proc/mounts)")


def cgroup_id(path: str) -> int:
    """The id the kernel reports for a cgroup directory."""
    return os.stat(path).st_ino


class CgroupIndex:
    def __init__(self, root: str | None = None, rescan_interval: float = 1.0):
        self.root = root or cgroup2_mount()
        self.rescan_interval = rescan_interval
        self._paths: dict[int, str] = {}
        self._last_scan = float("-inf")
        self.scans = 0

    def path(self, cgid: int) -> str | None:
        """The path relative to the cgroup2 root ("/" for the root), or None if unknown."""
        found = self._paths.get(cgid)
        if found is None and time.monotonic() - self._last_scan >= self.rescan_interval:
            self.rescan()
            found = self._paths.get(cgid)
        return found

    def rescan(self) -> None:
        paths = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except FileNotFoundError:
                continue  # removed while we walked
            rel = os.path.relpath(dirpath, self.root)
            paths[ino] = "/" if rel == "." else "/" + rel
        self._paths = paths
        self._last_scan = time.monotonic()
        self.scans += 1
