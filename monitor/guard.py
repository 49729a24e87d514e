"""Files a write deny protects, made immutable in each container, so the kernel refuses every
write to them; and files looked up inside a container without leaving it.

A tracepoint can kill a process but not fail its call: truncate(2), a rename(2) over a file,
unlink, chmod, chown and an open with O_TRUNC change the file inside the call, before any
kill. So for an enforcing open deny on an exact path that names writing (write, create or
truncate), the agent sets the file's immutable attribute (FS_IMMUTABLE_FL, as `chattr +i`
does) in each container the rule applies to: the kernel then refuses all of those with
EPERM whatever name they use (the attribute is the inode's), and the programs report the
refusal (file.bpf.h, write.bpf.h). Only an attribute this agent set is cleared, when its
rule goes; one set by someone else is left as it is. A container with CAP_LINUX_IMMUTABLE
(a privileged one) could clear it: it is set again at the next look, and counted.

Files are found through one of the container's processes (its root, /proc/PID/root) with
openat2(RESOLVE_IN_ROOT): a symbolic link in the container resolves inside it, never to a
file of the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import stat
import struct

log = logging.getLogger("crossedge.guard")

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS, RESOLVE_IN_ROOT = 0x02, 0x10
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_IMMUTABLE_FL = 0x10
WRITES = frozenset(("write", "create", "truncate"))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def open_in(pid: int, path: str, flags: int = os.O_PATH) -> int:
    """A descriptor for `path` as the process's root sees it (symbolic links resolved inside
    that root); OSError if it is not there."""
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(SYS_OPENAT2, root, os.fsencode(path), how, len(how))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return fd
    finally:
        os.close(root)


def identity(pid: int, path: str) -> tuple[int, int] | None:
    """(dev, inode) of a file in a process's root, dev as the kernel encodes it (major << 20 |
    minor, what path.bpf.h reads); None if it is not there."""
    try:
        fd = open_in(pid, path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino


def _flags(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]


def _set_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))


class Guard:
    """The immutable attributes this agent set: (cgroup, path) -> (dev, inode) of the file,
    kept in `state` (a JSON file) so a restarted agent knows which to clear."""

    def __init__(self, state: str | None = None):
        self.state = state
        self.held: dict[tuple[int, str], tuple[int, int]] = {}
        self.restored = 0  # attributes found cleared (a privileged container) and set again
        self.problems: dict[tuple[int, str], str] = {}  # files that could not be made immutable, and why
        if state:
            with contextlib.suppress(OSError, ValueError):
                with open(state) as fh:
                    self.held = {(c, p): (d, i) for c, p, d, i in json.load(fh)}

    def apply(self, wanted: set[tuple[int, str]], roots: dict[int, int]) -> None:
        """Make the wanted (cgroup, path) files immutable, and clear what this agent set that no
        rule wants now; `roots` has a process for each container there is (cgroup -> pid),
        whose root to look in."""
        before = dict(self.held)
        for key in wanted:
            if (pid := roots.get(key[0])) is not None:
                self._hold(key, pid)
        for key in [k for k in self.held if k not in wanted]:
            if (pid := roots.get(key[0])) is not None:
                self._release(key, pid)
            del self.held[key]  # cleared, or its container is gone and took its files with it
        if self.held != before:
            self._save()

    def _hold(self, key: tuple[int, str], pid: int) -> None:
        try:
            fd = open_in(pid, key[1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.problems[key] = f"cannot open it: {exc.strerror}"
            return  # not there (yet): an open that creates it is still killed
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.problems[key] = "not a regular file"
                return
            flags, mine = _flags(fd), self.held.get(key)
            if flags & FS_IMMUTABLE_FL:
                return  # already (ours, or someone else's: theirs to keep)
            if mine == (os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino):
                self.restored += 1  # ours, cleared since: set again
                log.warning("immutable attribute of %s in cgroup %d was cleared: set again", key[1], key[0])
            _set_flags(fd, flags | FS_IMMUTABLE_FL)
            self.held[key] = (os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino)
            self.problems.pop(key, None)
        except OSError as exc:
            self.problems[key] = f"cannot make it immutable: {exc.strerror}"
        finally:
            os.close(fd)

    def _release(self, key: tuple[int, str], pid: int) -> None:
        with contextlib.suppress(OSError):
            fd = open_in(pid, key[1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            try:
                st = os.fstat(fd)
                if (os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino) == self.held[key]:
                    _set_flags(fd, _flags(fd) & ~FS_IMMUTABLE_FL)
            finally:
                os.close(fd)

    def guarded(self) -> dict[tuple[int, int], tuple[int, str]]:
        """(dev, inode) -> (cgroup, path) of every file held."""
        return {ident: key for key, ident in self.held.items()}

    def _save(self) -> None:
        if not self.state:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.state)), exist_ok=True)
        tmp = f"{self.state}.tmp"
        with open(tmp, "w") as fh:
            json.dump([[c, p, d, i] for (c, p), (d, i) in self.held.items()], fh)
        os.replace(tmp, self.state)


AT_FDCWD = -100


def refused_file(pid: int, names: list[str], dirfd: int, guarded: dict, root: int | None) -> str | None:
    """The protected path a refused call named (one of `names`, as it gave them), or None:
    each name looked up as the caller saw it (an absolute one in its container's root, also
    through `root`, another of the container's processes, when the caller has gone; a
    relative one from its working directory or `dirfd`, while it lives), and compared by
    identity with the files held (`guarded`: (dev, inode) -> (cgroup, path))."""
    for name in filter(None, names):
        if name.startswith("/"):
            found = identity(pid, name) or (identity(root, name) if root else None)
        else:
            base = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
            found = _relative_identity(base, name)
        if found in guarded:
            return guarded[found][1]
    return None


def _relative_identity(base: str, name: str) -> tuple[int, int] | None:
    """(dev, inode) of a name relative to a directory of a process (its cwd, a descriptor):
    only compared, never changed, so a link leading out of the container finds nothing held."""
    try:
        fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)
    return os.major(st.st_dev) << 20 | os.minor(st.st_dev), st.st_ino
