"""Which opens are worth reporting: the node's watch list.

The kernel reports an open only when a watch or a file rule names its path and one of its
accesses (file.bpf.h), so ordinary I/O costs nearly nothing. Every file rule in the policy
is watched for the accesses it names (an `allow` rule is how staff add a watch from the
dashboard); the watches here are the defaults every node adds, the usual suspects of
container breakouts and credential theft. A node changes them with CROSSEDGE_FILE_WATCH:
whitespace-separated `glob[:access,...]` entries (access defaults to every one), or `-`
for none.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import ACCESSES, GLOB_CHARS, glob_match

WRITES = ("write", "create", "truncate")
BINARY_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/lib", "/usr/lib")


@dataclass(frozen=True)
class Watch:
    path: str  # a glob: a path, a prefix ending in "*", or any fnmatch pattern
    access: tuple[str, ...] = ACCESSES

    def matches(self, path: str, access) -> bool:
        return bool(set(self.access) & set(access)) and glob_match(path, self.path)


DEFAULT_WATCHES = (
    *(Watch(p) for p in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/*")),
    Watch("/etc/*", WRITES),
    *(Watch(p) for p in ("/root/.ssh/*", "/home/*/.ssh/*")),
    *(Watch(p) for p in ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock")),
    *(Watch(p) for p in ("/run/podman/podman.sock", "/var/run/podman/podman.sock")),
    Watch("/proc/*/mem"),
    *(Watch(f"{d}/*", WRITES) for d in BINARY_DIRS),
)


class WatchError(ValueError):
    pass


def parse_watches(text: str | None) -> tuple[Watch, ...]:
    """CROSSEDGE_FILE_WATCH as watches; None or blank: the defaults; "-": none."""
    if text is None or not text.strip():
        return DEFAULT_WATCHES
    if text.strip() == "-":
        return ()
    watches = []
    for item in text.split():
        path, _, access = item.partition(":")
        names = tuple(a for a in access.split(",") if a) if access else ACCESSES
        if not path.startswith("/") and not GLOB_CHARS & set(path[:1]):
            raise WatchError(f"CROSSEDGE_FILE_WATCH: {item!r}: a watch is an absolute path or glob, e.g. /etc/*:write")
        if bad := [a for a in names if a not in ACCESSES]:
            raise WatchError(f"CROSSEDGE_FILE_WATCH: {item!r}: unknown access {bad[0]!r} (use {', '.join(ACCESSES)})")
        watches.append(Watch(path, tuple(a for a in ACCESSES if a in names)))
    return tuple(watches)


def watched(path: str, access, watches) -> bool:
    """Whether a node watch names this open (the kernel's prefix filter lets a glob's
    whole literal prefix through: the agent finishes the match)."""
    return any(w.matches(path, access) for w in watches)
