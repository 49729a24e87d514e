"""cgroup path -> container, by the naming conventions of container runtimes.

Recognised leaf names (systemd cgroup driver, and the cgroupfs driver's plain ids):
  docker-<id>.scope            /docker/<id>                   Docker
  cri-containerd-<id>.scope    /containerd/<id>, .../<ns>/<id> containerd
  crio-<id>.scope              CRI-O
  libpod-<id>.scope            Podman
and kubepods slices (`kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` or
`/kubepods/burstable/pod<uid>/<id>`) mark a Kubernetes pod. Anything else (a systemd
service, a user session, the root) is the host.

The cgroup path carries only the container id. Names come from the runtime's own metadata
where we can read it without its API: Docker keeps `Name` in
`<docker root>/containers/<id>/config.v2.json` (the agent's --docker-root, repeatable).
Without metadata the name is the short id, as `docker ps` shows it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

HEX_ID = r"[0-9a-f]{64}"
SCOPE_RE = re.compile(rf"^(docker|cri-containerd|crio|libpod)-({HEX_ID})\.scope$")
RUNTIME_OF_PREFIX = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}
PLAIN_ID_RE = re.compile(rf"^{HEX_ID}$")
POD_RE = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
DEFAULT_DOCKER_ROOT = "/var/lib/docker"


@dataclass(frozen=True)
class ContainerRef:
    runtime: str
    container_id: str
    name: str
    pod_uid: str = ""


def identify(cgroup_path: str | None, docker_roots: tuple[str, ...] = (DEFAULT_DOCKER_ROOT,)) -> ContainerRef | None:
    """The container a cgroup path belongs to, or None for the host."""
    if not cgroup_path:
        return None
    parts = [p for p in cgroup_path.split("/") if p]
    # The innermost container wins: nested cgroups inside a container belong to it.
    for depth in range(len(parts) - 1, -1, -1):
        leaf, parents = parts[depth], parts[:depth]
        ref = _from_leaf(leaf, parents)
        if ref:
            runtime, cid = ref
            pod = _pod_uid(parents)
            if pod and runtime == "docker" and not leaf.startswith("docker-"):
                runtime = "kubepods"
            return ContainerRef(runtime, cid, _name(runtime, cid, docker_roots), pod)
    return None


def is_container_cgroup(cgroup_path: str) -> bool:
    """True for the cgroup a runtime made for a container, not one nested inside it: where
    enforcement attaches (programs there also run for the cgroups below)."""
    parts = [p for p in cgroup_path.split("/") if p]
    if not parts or not _from_leaf(parts[-1], parts[:-1]):
        return False
    return not any(_from_leaf(parts[i], parts[:i]) for i in range(len(parts) - 1))


def _from_leaf(leaf: str, parents: list[str]) -> tuple[str, str] | None:
    m = SCOPE_RE.match(leaf)
    if m:
        return RUNTIME_OF_PREFIX[m.group(1)], m.group(2)
    if PLAIN_ID_RE.match(leaf) and parents:
        if parents[-1] == "docker":
            return "docker", leaf
        if any(p == "containerd" for p in parents):
            return "containerd", leaf
        if _pod_uid(parents):
            return "kubepods", leaf
    return None


def _pod_uid(parents: list[str]) -> str:
    for part in reversed(parents):
        m = POD_RE.search(part)
        if m and "kubepods" in "/".join(parents):
            return m.group(1).replace("_", "-")
    return ""


def _name(runtime: str, cid: str, docker_roots: tuple[str, ...]) -> str:
    if runtime == "docker":
        for root in docker_roots:
            name = _docker_name(root, cid)
            if name:
                return name
    return cid[:12]


_NAMES: dict[tuple[str, str], str] = {}


def _docker_name(docker_root: str, cid: str) -> str | None:
    """Name from Docker's metadata; only found names are cached (metadata may come later)."""
    key = (docker_root, cid)
    if key in _NAMES:
        return _NAMES[key]
    try:
        with open(os.path.join(docker_root, "containers", cid, "config.v2.json"), "rb") as fh:
            name = json.load(fh).get("Name")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not name.strip("/"):
        return None
    if len(_NAMES) > 4096:
        _NAMES.clear()
    _NAMES[key] = name.lstrip("/")
    return _NAMES[key]
