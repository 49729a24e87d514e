"""cgroup path -> container, by the naming conventions of container runtimes.

Recognised leaf names (systemd cgroup driver, and the cgroupfs drivers' forms):
  docker-<id>.scope            /docker/<id>                   Docker
  cri-containerd-<id>.scope    /containerd/<id>, /<ns>/<id>   containerd
  crio-<id>.scope              CRI-O
  libpod-<id>.scope            /libpod_parent/libpod-<id>     Podman
and kubepods slices (`kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` or
`/kubepods/burstable/pod<uid>/<id>`) mark a Kubernetes pod. Anything else (a systemd
service, a user session, the root) is the host. The kernel classifies new cgroups by the
same names (`container_shaped` in bpfscripts/enforce_connect.bpf.c); a test holds the two
to one list.

The cgroup path carries only the container id. Name, image and labels come from the
runtime's own metadata, read from disk without its API (the agent's --docker-root and
--podman-root, repeatable): Docker's `<root>/containers/<id>/config.v2.json`, written
when the container is created, so before it starts; Podman's storage index
`<root>/*-containers/containers.json` (name and image; its labels live in Podman's own
database, which is not read). Without metadata the name is the short id, as `docker ps`
shows it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from dataclasses import dataclass, field

HEX_ID = r"[0-9a-f]{64}"
SCOPE_RE = re.compile(rf"^(docker|cri-containerd|crio|libpod)-({HEX_ID})\.scope$")
PODMAN_CGROUPFS_RE = re.compile(rf"^libpod-({HEX_ID})$")
RUNTIME_OF_PREFIX = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}
PLAIN_ID_RE = re.compile(rf"^{HEX_ID}$")
POD_RE = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
DEFAULT_DOCKER_ROOT = "/var/lib/docker"
DEFAULT_PODMAN_ROOT = "/var/lib/containers/storage"
MAX_LABELS = 64
MAX_LABEL_KEY, MAX_LABEL_VALUE = 128, 256


@dataclass(frozen=True)
class Meta:
    """What a runtime's metadata says of a container."""

    name: str
    image: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ContainerRef:
    runtime: str
    container_id: str
    name: str
    pod_uid: str = ""
    image: str = ""
    labels: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def as_event(self) -> dict:
        return {
            "runtime": self.runtime,
            "id": self.container_id,
            "name": self.name,
            "pod_uid": self.pod_uid,
            "image": self.image,
            "labels": dict(self.labels),
        }


def identify(
    cgroup_path: str | None,
    docker_roots: tuple[str, ...] = (DEFAULT_DOCKER_ROOT,),
    podman_roots: tuple[str, ...] = (DEFAULT_PODMAN_ROOT,),
) -> ContainerRef | None:
    """The container a cgroup path belongs to, or None for the host."""
    if not cgroup_path:
        return None
    parts = [p for p in cgroup_path.split("/") if p]
    # The outermost container wins: that is where the runtime put it. Everything below is the
    # container's own, and a tenant can name a cgroup there like another container's scope.
    for depth in range(len(parts)):
        leaf, parents = parts[depth], parts[:depth]
        ref = _from_leaf(leaf, parents)
        if ref:
            runtime, cid = ref
            pod = _pod_uid(parents)
            if pod and runtime == "docker" and not leaf.startswith("docker-"):
                runtime = "kubepods"
            known = _KNOWN.get(cid)
            if known is None and time.monotonic() - _MISSED.get(cid, float("-inf")) >= MISS_TTL:
                known = _read_meta(runtime, leaf, pod, cid, docker_roots, podman_roots)
            runtime, meta = known or (runtime, Meta(cid[:12]))
            return ContainerRef(runtime, cid, meta.name, pod, meta.image, meta.labels)
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
    m = PODMAN_CGROUPFS_RE.match(leaf)
    if m and parents:
        return "podman", m.group(1)
    if PLAIN_ID_RE.match(leaf) and parents:
        if parents[-1] == "docker":
            return "docker", leaf
        if _pod_uid(parents):
            return "kubepods", leaf
        return "containerd", leaf  # containerd's cgroupfs form /<namespace>/<id> (or metadata says)
    return None


def _pod_uid(parents: list[str]) -> str:
    for part in reversed(parents):
        m = POD_RE.search(part)
        if m and "kubepods" in "/".join(parents):
            return m.group(1).replace("_", "-")
    return ""


_KNOWN: dict[str, tuple[str, Meta]] = {}  # id -> (runtime, meta) found; kept when a `--rm` container goes
_MISSED: dict[str, float] = {}  # id -> when its metadata was last looked for in vain
MISS_TTL = 1.0  # seconds before a container without metadata (containerd, CRI-O) is looked up again


def _read_meta(runtime, leaf, pod, cid, docker_roots, podman_roots) -> tuple[str, Meta] | None:
    """The runtime's metadata for a container, remembered once found. A miss is looked up
    again after MISS_TTL (metadata may come later), not on every event."""
    found = None
    if runtime == "docker" or PLAIN_ID_RE.match(leaf):  # cgroupfs ids: Docker's, whatever the parent
        if meta := _first(_docker_meta, docker_roots, cid):
            found = ("docker" if runtime == "containerd" else runtime, meta)  # a plain id was Docker's
    if found is None and runtime in ("podman", "containerd"):
        if meta := _first(_podman_meta, podman_roots, cid):
            found = ("podman", meta)
    if found:
        if len(_KNOWN) > 4096:
            _KNOWN.pop(next(iter(_KNOWN)))
        _KNOWN[cid] = found
        _MISSED.pop(cid, None)
    else:
        if len(_MISSED) > 4096:
            _MISSED.clear()
        _MISSED[cid] = time.monotonic()
    return found


def _first(read, roots: tuple[str, ...], cid: str) -> Meta | None:
    for root in roots:
        meta = read(root, cid)
        if meta is not None:
            return meta
    return None


def _labels(raw) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        return ()
    pairs = [(str(k)[:MAX_LABEL_KEY], str(v)[:MAX_LABEL_VALUE]) for k, v in raw.items()]
    return tuple(sorted(pairs)[:MAX_LABELS])


def _docker_meta(docker_root: str, cid: str) -> Meta | None:
    """Docker's config.v2.json (read again each time: a renamed container's changes)."""
    try:
        with open(os.path.join(docker_root, "containers", cid, "config.v2.json"), "rb") as fh:
            doc = json.load(fh)
        name = doc.get("Name")
        config = doc.get("Config") if isinstance(doc.get("Config"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not name.strip("/"):
        return None
    image = config.get("Image") if isinstance(config.get("Image"), str) else ""
    return Meta(name.lstrip("/")[:255], image[:255], _labels(config.get("Labels")))


_PODMAN: dict[str, tuple[float, dict[str, Meta]]] = {}  # index file -> (mtime, id -> meta)


def _podman_meta(storage_root: str, cid: str) -> Meta | None:
    """Podman's containers/storage index, read again only when it changed."""
    for index in glob.glob(os.path.join(glob.escape(storage_root), "*-containers", "containers.json")):
        try:
            mtime = os.stat(index).st_mtime
            if _PODMAN.get(index, (None,))[0] != mtime:
                with open(index, "rb") as fh:
                    _PODMAN[index] = (mtime, _podman_index(json.load(fh)))
        except (OSError, ValueError):
            continue
        meta = _PODMAN[index][1].get(cid)
        if meta is not None:
            return meta
    return None


def _podman_index(doc) -> dict[str, Meta]:
    found = {}
    for item in doc if isinstance(doc, list) else []:
        try:
            names = item.get("names") or []
            extra = json.loads(item.get("metadata") or "{}")
            name = str(extra.get("name") or names[0])
            found[str(item["id"])] = Meta(name[:255], str(extra.get("image-name") or "")[:255])
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            continue
    return found
