"""cgroup id -> cgroup path on the cgroup2 hierarchy.

bpftrace's `cgroup` is the inode number of the caller's cgroup2 directory. We find the
cgroup2 mount in /proc/mounts (hybrid hosts mount it at /sys/fs/cgroup/unified). An id
is also a kernfs file handle, so an unknown id is opened by handle (`open_by_handle_at`,
one syscall, needs CAP_DAC_READ_SEARCH as the agent has) and its path read back: a new
container's first event finds its cgroup without walking the tree. Where handles do not
work (another filesystem, no capability) the tree is walked on a miss instead. Either way
an id that was not found is not looked for again for `rescan_interval` (a storm from one
vanished cgroup costs one lookup, not one per event).
A cgroup that is gone keeps its path for `keep_gone` seconds: the events of a `--rm`
container that connected and exited arrive after its cgroup was removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
import weakref

FILEID_KERNFS = 0xFE  # the handle type of a kernfs node: its 64-bit id
_libc = ctypes.CDLL(None, use_errno=True)


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
        self.handle_lookups = 0
        self._mount_fd: int | None = None
        self._handles = self._probe_handles()
        self.max_paths = 100_000  # past this many ids (cgroups come and go) a walk prunes the gone

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
        if self._handles:
            found = self._by_handle(cgid)
            if found is not None:
                self._paths[cgid] = found
                if len(self._paths) > self.max_paths:
                    self.rescan()
        else:
            self.rescan()
            found = self._paths.get(cgid)
        if found is None:
            self._missed[cgid] = now
            if len(self._missed) > 10_000:  # ids of long-gone cgroups
                self._missed.clear()
        return found

    def _probe_handles(self) -> bool:
        """Whether ids open as handles on this mount: the root's own id must give the root."""
        try:
            self._mount_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        self._closer = weakref.finalize(self, os.close, self._mount_fd)  # an index dropped closes it
        if self._by_handle(cgroup_id(self.root)) == "/":
            return True
        self.close()
        return False

    def _by_handle(self, cgid: int) -> str | None:
        """The path of a live cgroup by its id, None when no such cgroup exists (any more)."""
        handle = ctypes.create_string_buffer(struct.pack("=IiQ", 8, FILEID_KERNFS, cgid), 16)
        fd = _libc.open_by_handle_at(self._mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.handle_lookups += 1
        if fd < 0:
            code = ctypes.get_errno()
            if code in (errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EBADF):
                self._handles = False  # not a kernfs mount, or no capability: walk instead
            return None
        try:
            target = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
        finally:
            os.close(fd)
        rel = os.path.relpath(target, self.root)
        return None if rel.startswith("..") else "/" if rel == "." else "/" + rel

    def close(self) -> None:
        if self._mount_fd is not None:
            self._closer()
            self._mount_fd = None
            self._handles = False

    def alive(self, cgid: int) -> bool:
        """Whether a cgroup with this id exists now (by handle; else by the latest walk)."""
        if self._handles:
            return self._by_handle(cgid) is not None
        if time.monotonic() - self._last_scan >= self.rescan_interval:
            self.rescan()
        return cgid in self._paths

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
