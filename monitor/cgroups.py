"""cgroup id -> cgroup path on the cgroup2 hierarchy.

bpftrace's `cgroup` is the inode number of the caller's cgroup2 directory. We find the
cgroup2 mount in /proc/mounts (hybrid hosts mount it at /sys/fs/cgroup/unified), walk it
once, cache the ids, and walk again on a miss, so a container's first event already
finds its cgroup. An id that a walk did not find is not looked for again for
`rescan_interval` (a storm from one vanished cgroup costs one walk, not one per event).
A cgroup that is gone keeps its path for `keep_gone` seconds: the events of a `--rm`
container that connected and exited arrive after its cgroup was removed.
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
    def __init__(self, root: str | None = None, rescan_interval: float = 1.0, keep_gone: float = 60.0):
        self.root = root or cgroup2_mount()
        self.rescan_interval = rescan_interval
        self.keep_gone = keep_gone
        self._paths: dict[int, str] = {}
        self._gone: dict[int, tuple[str, float]] = {}  # id -> (path, when a walk no longer found it)
        self._missed: dict[int, float] = {}  # id -> when a walk last failed to find it
        self._last_scan = float("-inf")
        self.scans = 0

    def path(self, cgid: int) -> str | None:
        """The path relative to the cgroup2 root ("/" for the root), or None if unknown."""
        found = self._paths.get(cgid)
        if found is not None:
            return found
        if cgid in self._gone:
            return self._gone[cgid][0]
        now = time.monotonic()
        if now - self._missed.get(cgid, float("-inf")) < self.rescan_interval:
            return None
        self.rescan()
        found = self._paths.get(cgid)
        if found is None:
            self._missed[cgid] = now
            if len(self._missed) > 10_000:  # ids of long-gone cgroups
                self._missed.clear()
        return found

    def learn(self, cgid: int, path: str) -> None:
        """A path found by another walk (the enforcer's), so its events need no walk of ours."""
        self._paths[cgid] = path

    def id_of(self, path: str) -> int | None:
        """The id of the cgroup at this path (relative to the cgroup2 root), None if gone."""
        try:
            return cgroup_id(os.path.join(self.root, path.lstrip("/")))
        except OSError:
            return None

    def rescan(self) -> None:
        paths = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except FileNotFoundError:
                continue  # removed while we walked
            rel = os.path.relpath(dirpath, self.root)
            paths[ino] = "/" if rel == "." else "/" + rel
        now = time.monotonic()
        self._gone = {i: g for i, g in self._gone.items() if now - g[1] < self.keep_gone and i not in paths}
        self._gone |= {i: (p, now) for i, p in self._paths.items() if i not in paths}
        self._paths = paths
        self._last_scan = time.monotonic()
        self.scans += 1
