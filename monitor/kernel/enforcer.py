"""Loads, attaches and feeds the programs: the node's connect()/sendmsg() observer for
containers, and its enforcer.

Pins live in `<pin_root>/<generation>/{progs,maps}`, a generation being named by the
object's hash. A restarted agent finds its generation pinned and adopts it (reading the
maps back, attaching only where missing); an upgraded one loads a new generation, attaches
it, and only then detaches the old: no moment without enforcement. Pinned programs keep
enforcing, and counting, while the agent is down.

Rules apply to container cgroups (the outermost cgroup a runtime made for a container)
whose path matches `scope`, a glob, and to the cgroups below them: their ids are written
to the `monitored` map. The programs attach higher, so that a container that starts is
observed from its first connect(), before any rescan could find it: at the scope's
literal directory (`/crossedge-x.slice` for `/crossedge-x.slice/*`, a container itself
for a literal path), or, for a scope that starts with a wildcard, at each matching
container's parent (e.g. /system.slice for Docker), and at the runtimes' parent cgroups
(RUNTIME_PARENTS) where they exist, so that the first container of a node is observed
too. Other cgroups below an attach point are observed, never judged. Never the cgroup
root: a container directly below it gets the programs itself. The demo and the tests
confine the scope to cgroups they made.

A container made after a rescan is judged from its first call all the same: the
tracing programs (attached through `links`, pinned with the generation) classify it in
the kernel when its cgroup is made, and hold its first exec until the agent has listed
it and written its rules (`release`).
Only programs named `crossedge_*` and pinned under our own pin root are ever detached.

Every method is blocking (bpftool runs as a child); the agent calls them from a thread.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import posixpath
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import dns, resolvers
from ..cgroups import cgroup2_mount, cgroup_id
from ..containers import DEFAULT_DOCKER_ROOT, DEFAULT_PODMAN_ROOT, identify, is_container_cgroup
from ..files import Watch
from ..guard import Guard, identity
from ..rules import GLOB_CHARS, RuleSet
from . import batch, bpftool, links, patterns, unix_hook
from .compile import (
    CONFIG_MAP,
    FLOOD_MAP,
    FWD_MAP,
    IDS_MAP,
    LIMIT_MAP,
    MAPS,
    POLICY_MAPS,
    PSCOPE_MAP,
    REV_MAP,
    SCAN_EVERY_MAP,
    SCAN_MAP,
    SUMMARISE,
    UNNAMED_MAP,
    Scope,
    compile_rules,
)
from .layout import (
    ADDR_KEY,
    CGROUP,
    COUNTER,
    DNS_STATS,
    FQDN_KEY,
    FQDN_NOTHING,
    ID,
    ID_KEY,
    MAX_ENTRIES,
    MAX_FLOWS,
    MAX_NESTED,
    MON,
    MON_OWN,
    PAT,
    PSCOPE,
    RESOLVED,
    SLOT,
    TRAFFIC,
    KernelRule,
    access_names,
    decode_flooder,
    decode_flow,
    decode_fqdn_rules,
    decode_key,
    decode_limit,
    decode_pat_key,
    decode_pconfig,
    decode_scan,
    decode_scan_limits,
    decode_traffic,
    encode_fqdn_key,
    encode_resolver,
    from_json_bytes,
    hex_bytes,
)

log = logging.getLogger("crossedge.enforcer")
OBJECT = Path(__file__).resolve().parents[2] / "bpfscripts" / "enforce_connect.bpf.o"
DEFAULT_PIN_ROOT = "/sys/fs/bpf/crossedge"
PREFIX = "crossedge_"
# cgroup program -> (bpftool attach type, the name `cgroup show` reports)
PROGRAMS = {
    "crossedge_c4": ("connect4", "cgroup_inet4_connect"),
    "crossedge_c6": ("connect6", "cgroup_inet6_connect"),
    "crossedge_s4": ("sendmsg4", "cgroup_udp4_sendmsg"),
    "crossedge_s6": ("sendmsg6", "cgroup_udp6_sendmsg"),
    "crossedge_in": ("ingress", "cgroup_inet_ingress"),  # traffic and DNS answers; passes every packet
    "crossedge_out": ("egress", "cgroup_inet_egress"),  # traffic; passes every packet
    "crossedge_sock": ("sock_create", "cgroup_inet_sock_create"),  # raw, ping and SCTP sockets (sock.bpf.h)
}
XDP_MODES = (("xdpdrv", "native"), ("xdpgeneric", "generic"))  # tried in this order...
# ...except on these virtual devices, whose native XDP converts every packet the local stack
# sends them (bench/xdp.py on a veth, a program that only passes: native 0.90, generic 0.965)
XDP_GENERIC_FIRST = ("veth",)
XDP_SHOWN = {"driver": "xdpdrv", "generic": "xdpgeneric", "offload": "xdpoffload"}  # `net show` mode -> attach type
TRAFFIC_GRACE = 0.05  # seconds after an epoch flip before the old table is read (programs run for µs)
# tp_btf programs (links.attach_tracing)
TRACING = ("crossedge_mkdir", "crossedge_rmdir", "crossedge_attach", "crossedge_exec", "crossedge_exit",
           "crossedge_fork")  # fmt: skip
# ...and the one that sees the 32-bit calls no syscall tracepoint does (process.bpf.h): it runs at
# every system call of the node, so it is attached only while an open deny is in force
COMPAT = "crossedge_compat"
# ...and the one that judges AF_PACKET sockets at socket()'s entry (sock.bpf.h): a syscall tracepoint, which
# puts every system call of the node on the slow path, so it is attached only while a rule names packet sockets
PACKET = "crossedge_psock"
PACKET_TRACEPOINT = "syscalls/sys_enter_socket"
# crossedge_out's tail call for the packets no call hook judged (raw, ping, SCTP): loaded, never attached
PACKET_JUDGE = "crossedge_pkt"
# syscall tracepoint programs (links.attach_tracepoint) -> their tracepoint: the opens judged at
# their exit (file.bpf.h), and the calls refused where an open deny applies (process.bpf.h)
TRACEPOINTS = {
    **{f"crossedge_{name}_exit": f"syscalls/sys_exit_{call}"
       for name, call in (("openat", "openat"), ("open", "open"), ("openat2", "openat2"), ("creat", "creat"),
                          ("handle", "open_by_handle_at"))},
    "crossedge_getfd": "syscalls/sys_enter_pidfd_getfd",
    "crossedge_uring": "syscalls/sys_enter_io_uring_setup",
    # renames' entries, before their exits: while one is in flight, no file is believed unnamed (quiet.bpf.h)
    **{f"crossedge_r_{call}": f"syscalls/sys_enter_{call}" for call in ("rename", "renameat", "renameat2")},
    # calls that change a file in place: their refusals by an immutable file (monitor/guard.py)
    **{f"crossedge_w_{call}": f"syscalls/sys_exit_{call}"
       for call in ("truncate", "ftruncate", "rename", "renameat", "renameat2", "unlink", "unlinkat", "link", "linkat",
                    "chmod", "fchmod", "fchmodat", "chown", "lchown", "fchown", "fchownat")},
}  # fmt: skip
# Where runtimes make containers: the systemd driver's slices, the cgroupfs drivers' parents.
RUNTIME_PARENTS = ("/system.slice", "/machine.slice", "/kubepods.slice", "/kubepods", "/docker", "/libpod_parent")
# cgroupfs drivers make their parent with their first container, too late to attach there first
CGROUPFS_PARENTS = {"/docker": "dockerd", "/libpod_parent": "podman"}
NO_RULE = "(no rule)"


def _xdp_on(netns: str | None, dev: str) -> dict | None:
    """The XDP program on a device ({"id", "mode"}), or None."""
    shown = bpftool.run("net", "show", "dev", dev, netns=netns) or []
    found = [x for item in shown for x in item.get("xdp", [])]
    return found[0] if found else None


def _ours(prog_id: int) -> bool:
    with contextlib.suppress(bpftool.BpftoolError):
        return str(bpftool.run("prog", "show", "id", str(prog_id)).get("name", "")).startswith(PREFIX)
    return False


def _link_kind(netns: str | None, dev: str) -> str:
    """The device's link kind (veth, bridge, ...; "" for a physical device)."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "-d", "link", "show", "dev", dev]
    try:
        shown = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return str((shown[0].get("linkinfo") or {}).get("info_kind", "")) if shown else ""


def _xdp_attach(netns: str | None, dev: str, prog: str, replace: bool) -> str:
    """Native, else generic (generic first on virtual devices where it costs less): the mode
    it got; raises if neither took."""
    problems = []
    modes = XDP_MODES[::-1] if _link_kind(netns, dev) in XDP_GENERIC_FIRST else XDP_MODES
    for attach_type, name in modes:
        try:
            bpftool.run("net", "attach", attach_type, "pinned", prog, "dev", dev, *(["overwrite"] if replace else []),
                        json_output=False, netns=netns)  # fmt: skip
            return name
        except bpftool.BpftoolError as exc:
            problems.append(f"{name}: {exc}")
    raise bpftool.BpftoolError(f"XDP on {dev}", "; ".join(problems))


def _choice(name: str, patterns: dict[int, frozenset], cgid: int) -> tuple[int, dns.Pattern | None]:
    """(bucket, pattern) the kernel picks for a name a container resolved (dns.bpf.h): its
    most specific pattern among the container's own when one matches (they include every
    container's), else among every container's."""
    own = dns.best_pattern(name, patterns.get(cgid, frozenset())) if cgid else None
    return (cgid, own) if own else (0, dns.best_pattern(name, patterns.get(0, frozenset())))


MAX_HASHES = 60_000  # files remembered hashed (exec_hashes holds 65,536, least recently used go)
POLICY_VERSION, IN_FLIGHT = 1, 2  # pgen's slots the agent writes (CE_GEN_POLICY, CE_GEN_RENAMING)
PRUNE_IDLE_NS = 60 * 10**9  # flows idle this long may be forgotten when the table fills up


def at_or_below(path: str, root: str) -> bool:
    """Whether a cgroup path is `root` or inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def literal_prefix(scope: str) -> str:
    """The directory part of a scope glob before its first wildcard component ("" if none)."""
    parts = []
    for part in scope.strip("/").split("/"):
        if not part or GLOB_CHARS & set(part):
            break
        parts.append(part)
    return "/" + "/".join(parts) if parts and scope.startswith("/") else ""


def host_mount_namespace() -> int:
    """The host's mount namespace (pid 1's: the agent may run in a container of its own)."""
    try:
        return os.stat("/proc/1/ns/mnt").st_ino
    except OSError:
        return os.stat("/proc/self/ns/mnt").st_ino


def runs_32_bit_calls(proc: str = "/proc") -> bool:
    """Whether this kernel takes 32-bit system calls: x86-64 built with IA32 emulation
    (abi.vsyscall32 exists) and not booted with it off (ia32_emulation=0). Where it does
    not, nothing needs refusing them."""
    if not os.path.exists(f"{proc}/sys/abi/vsyscall32"):
        return False
    with open(f"{proc}/cmdline") as fh:
        for arg in fh.read().split("--")[0].split():
            name, _, value = arg.partition("=")
            if name == "ia32_emulation":
                return value.lower() in ("1", "y", "yes", "on", "true")
    return True  # (a kernel built with it off by default is taken to have it on: the safe side)


class EnforcerError(RuntimeError):
    pass


@dataclass
class Layout:
    """Where one generation is pinned."""

    root: Path

    def prog(self, name: str) -> str:
        return str(self.root / "progs" / name)

    def map(self, name: str) -> str:
        return str(self.root / "maps" / name)

    def link(self, name: str) -> str:
        return str(self.root / "links" / name)

    def complete(self) -> bool:
        progs = [*PROGRAMS, *TRACING, COMPAT, PACKET, PACKET_JUDGE, *TRACEPOINTS]
        return all(os.path.exists(self.prog(p)) for p in progs) and os.path.exists(self.map("lifecycle"))


class Enforcer:
    def __init__(
        self,
        obj: str | Path = OBJECT,
        pin_root: str = DEFAULT_PIN_ROOT,
        scope: str = "*",
        cgroup_root: str | None = None,
        docker_roots: tuple[str, ...] = (DEFAULT_DOCKER_ROOT,),
        podman_roots: tuple[str, ...] = (DEFAULT_PODMAN_ROOT,),
        watches: tuple[Watch, ...] = (),
        files: bool = True,
        xdp_ifaces: tuple[str, ...] = (),
        scan_summary: int = SUMMARISE,
        io_uring: bool = True,
        compat: bool = True,
        guard_state: str | None = None,
        dns_resolvers: tuple[str, ...] = (),
    ):
        self.obj = Path(obj)
        self.resolvers = resolvers.trusted(dns_resolvers)  # whose answers teach names (monitor.resolvers)
        self.guard = Guard(guard_state)  # files made immutable for write denies
        self.io_uring = io_uring  # refuse io_uring_setup() where an open deny applies
        self.compat = compat  # ...and 32-bit system calls
        self.compat_error = ""
        self.packet_error = ""  # the packet socket program could not be attached
        self.unix_error = ""  # the unix socket programs could not be loaded or attached
        self.kernel_rules: frozenset[str] = frozenset()  # exec and open rules the kernel judges (by id)
        self.identities: dict[tuple[int, str], tuple[int, int]] = {}  # (cgroup, exact path) -> its file (dev, inode)
        self.id_paths: frozenset[str] = frozenset()  # the exact paths the identities are of
        self.id_looked: set[int] = set()  # cgroups whose files were looked up (through one of their processes)
        self.files_due: dict[int, set[int]] = {}  # cgroup -> processes held to look its files up through
        self.hashes: collections.OrderedDict[tuple, str] = collections.OrderedDict()  # files hashed -> SHA-256
        self.hashing: dict[int, int] = {}  # cgroup -> execs held there until their file is hashed
        self.hashes_new = False  # learned since the last write
        self.scan_summary = scan_summary  # new destinations per second from which calls are summed (a scan)
        self.watches = tuple(watches)  # file watches besides the file rules (monitor.files)
        self.files = files  # attach the open() programs
        self.xdp_ifaces = tuple(xdp_ifaces)  # interfaces for the blocklist: "dev" or "netns/dev"
        self.xdp_state: dict[str, str] = {}  # interface -> native, generic, or why not
        self.pin_root = Path(pin_root)
        self.scope = scope or "*"
        self.cgroup_root = cgroup_root or cgroup2_mount()
        self.docker_roots = tuple(docker_roots)
        self.podman_roots = tuple(podman_roots)
        self.layout: Layout | None = None
        self.prog_ids: dict[str, int] = {}
        self.mirror: dict[str, dict[bytes, bytes]] = {m: {} for m in POLICY_MAPS}
        self.slots: dict[str, int] = {}
        self.targets: list[str] = []  # attach points
        self.containers: list[str] = []  # container cgroups in scope
        self.scopes: list[Scope] = []
        self.scope_ids: frozenset[int] = frozenset()  # cgroups the rules apply to (`monitored`)
        self.monitored: set[int] = set()  # what the `monitored` map holds
        self.own: set[int] = set()  # ...with MON_OWN: the programs look up entries keyed by their id
        self.own_wanted: set[int] = set()  # the cgroups the policy written has such entries for
        self.attached_ids: set[int] = set()  # what the `attach_points` map holds
        self.heard: dict[int, float] = {}  # cgroups the kernel classified itself -> when we heard
        self.walked_at = float("-inf")  # when the walk behind `scopes` started
        self.ruleset: RuleSet | None = None
        self.policy_version: int | None = None  # what the kernel holds
        self.notes: list[dict] = []
        self.patterns: dict[int, frozenset] = {}  # name patterns with rules, per cgroup (0: every container)
        self.next_expiry = None  # when an ingress rule the kernel holds expires (its entries change then)
        self.error = ""
        self.adopted = False
        self.lifecycle_error = ""  # the container lifecycle programs could not be attached
        self.files_error = ""  # the open() programs could not be attached
        self.quiet_sound = False  # every rename hook attached: the kernel may remember files no rule names
        self.synced = False  # this agent wrote a policy whole (the pattern maps are consistent)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        """Adopt or load this object's generation, attach it, retire older generations."""
        if not self.obj.exists():
            raise EnforcerError(f"{self.obj} is missing: build it with `make bpf` (needs clang and libbpf-dev)")
        unix_obj = self.obj.with_name(unix_hook.OBJECT_NAME)
        unix_bytes = unix_obj.read_bytes() if unix_obj.exists() else b""
        digest = hashlib.sha256(self.obj.read_bytes() + unix_bytes).hexdigest()[:16]
        self.layout = Layout(self.pin_root / f"gen-{digest}")
        if self.layout.complete():
            self.adopted = True
            log.info("adopting pinned enforcement %s", self.layout.root)
        else:
            self._load()
        self._load_unix(unix_obj)
        self.prog_ids = {name: bpftool.prog_show(self.layout.prog(name))["id"] for name in PROGRAMS}
        self._read_maps()
        self._write_resolvers()  # before the programs run anywhere new: no answer is learned without
        self.make_runtime_parents()
        self.rescan(force=True)
        self.lifecycle_error = ""
        for name in TRACING:  # after the attach points are in their map, so they classify right away
            try:
                links.attach_tracing(self.layout.prog(name), self.layout.link(name))
            except links.LinkError as exc:  # degrade: new containers are judged once the agent lists them
                self.lifecycle_error = f"{name} not attached ({exc}): a new container is judged once listed"
                log.error(self.lifecycle_error)
        self.set_open_hooks(self.files)  # off: an adopted generation's, from before --no-files
        self._retire_old_generations()
        self._attach_xdp()

    def _load_unix(self, unix_obj: Path) -> None:
        """The unix socket programs (unix_hook.py), over this generation's maps: without them
        (a kernel before 6.7, no libbpf.so.1) unix socket rules are judged by nobody, and say so."""
        self.unix_error = ""
        if os.path.exists(self.layout.prog(unix_hook.UNIX_CONNECT)):
            return
        try:
            if not unix_obj.exists():
                raise links.LinkError(2, f"{unix_obj} is missing: build it with `make bpf`")
            unix_hook.load(str(unix_obj), self.layout)
        except links.LinkError as exc:
            self.unix_error = f"unix socket programs not loaded ({exc}): unix socket rules are not enforced"
            log.error(self.unix_error)

    def set_open_hooks(self, on: bool) -> None:
        """Attach the open() tracepoint programs (pinned links), or detach them: while any is
        attached every syscall of the machine takes the slow path."""
        self.files_error = ""
        self.quiet_sound = False
        bpftool.batch([self._quiet_command(0)])  # nothing remembered while the rename hooks come and go
        if not on:
            self._set_compat_hook(False)
        for name, tracepoint in TRACEPOINTS.items():
            if not on:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.layout.link(name))
                continue
            try:
                links.attach_tracepoint(self.layout.prog(name), tracepoint, self.layout.link(name))
            except links.LinkError as exc:  # degrade: connections and processes are still watched
                self.files_error = f"{name} not attached ({exc}): file opens are not watched"
                log.error(self.files_error)
        self.quiet_sound = on and not self.files_error
        # renames in flight counted from here (one under way now may leave it off: never stale)
        bpftool.batch([self._quiet_command(0, IN_FLIGHT), self._quiet_command(self._quiet_version(self.synced))])

    def _set_compat_hook(self, on: bool) -> None:
        """Attach the program that kills a 32-bit system call's caller where an open deny or a
        packet socket deny applies, or detach it. 32-bit calls are hidden from the open and
        socket() programs, so under such a deny they must be refused; but the program runs at
        every system call of the node (BENCHMARKS.md), so only while such a deny is in force."""
        problem = self._on_demand(COMPAT, on, links.attach_tracing)
        self.compat_error = f"{problem}: 32-bit system calls can open files unjudged" if problem else ""

    def _set_packet_hook(self, on: bool) -> None:
        """Attach the program that judges AF_PACKET sockets (no cgroup hook sees them made)
        while a rule names them, or detach it: it runs at every system call of the node."""
        problem = self._on_demand(PACKET, on, lambda prog, link: links.attach_tracepoint(prog, PACKET_TRACEPOINT, link))
        self.packet_error = f"{problem}: packet sockets are not judged" if problem else ""

    def _on_demand(self, name: str, on: bool, attach) -> str:
        """Attach (`attach(prog_pin, link_pin)`) or detach a program that costs the whole node,
        as the rules need it: the problem, "" if none."""
        link = self.layout.link(name)
        if not on:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            return ""
        try:
            attach(self.layout.prog(name), link)
        except links.LinkError as exc:
            log.error("%s not attached: %s", name, exc)
            return f"{name} not attached ({exc})"
        return ""

    def _quiet_command(self, value: int, slot: int = POLICY_VERSION) -> str:
        """Set one of `pgen` (quiet.bpf.h): the policy version the kernel's memory of files no
        rule names is valid for (0 turns that memory off), or the renames in flight."""
        return bpftool.update_command(
            self.layout.map("pgen"), hex_bytes(SLOT.pack(slot)), hex_bytes(COUNTER.pack(value))
        )

    def _quiet_version(self, synced: bool) -> int:
        """A version never used before, or 0 (nothing remembered) while a rename hook is
        missing (a rename it missed would leave a remembered path stale) or the pattern
        maps may be half-written (no policy written whole by this agent yet)."""
        return time.monotonic_ns() if self.quiet_sound and synced else 0

    def open(self) -> bool:
        """Look at what is pinned without changing anything (for status); False if nothing is."""
        generations = [g for g in self._generations() if g.complete()]
        if not generations:
            return False
        self.layout = generations[-1]
        self.prog_ids = {name: bpftool.prog_show(self.layout.prog(name))["id"] for name in PROGRAMS}
        self._read_maps()
        return True

    def status(self) -> dict:
        """What the kernel holds: for `runagent --status` and for people debugging a node."""
        if not self.open():
            return {"pinned": False, "pin_root": str(self.pin_root)}
        ours = set(self.prog_ids.values())
        return {
            "pinned": True,
            "pin_root": str(self.pin_root),
            "generation": self.layout.root.name,
            "attached": sorted({cg for cg, prog in self.attachments() if prog["id"] in ours}),
            "entries": {name: len(entries) for name, entries in self.mirror.items()},
            "counters": self.counters(),
            "lifecycle": sorted(name for name in TRACING if os.path.exists(self.layout.link(name))),
            "files": sorted(name for name in [*TRACEPOINTS, COMPAT] if os.path.exists(self.layout.link(name))),
            "pending": len(self.pending()),  # new containers whose first exec would be held
        }

    def _load(self) -> None:
        shutil.rmtree(self.layout.root, ignore_errors=True)  # a half-made generation from a crash
        (self.layout.root / "maps").mkdir(parents=True)
        try:
            bpftool.loadall(str(self.obj), str(self.layout.root / "progs"), str(self.layout.root / "maps"))
        except bpftool.BpftoolError:
            shutil.rmtree(self.layout.root, ignore_errors=True)
            raise
        log.info("loaded %s, pinned under %s", self.obj.name, self.layout.root)

    def _read_maps(self) -> None:
        """The kernel's policy entries and slot assignment, as pinned (after adopt or a failed write)."""
        slots = {}
        for name in POLICY_MAPS:
            entries = {}
            for item in bpftool.map_dump(self.layout.map(name)):
                key, value = from_json_bytes(item["key"]), from_json_bytes(item["value"])
                entries[key] = value
                if name in MAPS.values():  # values naming their rule
                    rule = KernelRule.decode(value)
                    if rule.slot:
                        slots[rule.rule_id] = rule.slot
            self.mirror[name] = entries
        self.slots = slots
        self._read_monitored()

    # -- attachment ---------------------------------------------------------------
    def _walk(self) -> tuple[list[str], list[Scope]]:
        """Container cgroups in scope, and the cgroups below them: at most MAX_NESTED in each
        container, as the kernel judges (those it took first; a process moved into another
        is killed), so no container can fill `monitored`."""
        containers, found = [], []
        for dirpath, _dirs, _files in os.walk(self.cgroup_root):
            rel = "/" + os.path.relpath(dirpath, self.cgroup_root)
            if rel == "/.":
                continue
            holder = next((t for t in containers if at_or_below(rel, t)), None)
            if holder is None and self._is_target(rel):
                containers.append(rel)
                holder = rel
            if holder is not None:
                try:
                    found.append((holder, rel, cgroup_id(dirpath)))
                except FileNotFoundError:
                    continue
        room = collections.Counter(holder for holder, rel, _ in found if holder != rel)
        if self.layout is not None and max(room.values(), default=0) > MAX_NESTED:
            self._read_monitored()  # a container past the bound: the cgroups the kernel took count first
        room = collections.Counter()  # nested cgroups taken, per container
        for holder, rel, cgid in found:
            room[holder] += holder != rel and cgid in self.monitored
        scopes = []
        for holder, rel, cgid in found:
            if holder != rel and cgid not in self.monitored:
                if room[holder] >= MAX_NESTED:
                    continue  # past the bound: not judged (the kernel kills what moves in)
                room[holder] += 1
            ref = identify(rel, self.docker_roots, self.podman_roots)
            scopes.append(Scope(cgid, rel, ref.name if ref else None))
        return containers, scopes

    def _is_target(self, rel: str) -> bool:
        return is_container_cgroup(rel) and fnmatch.fnmatchcase(rel, self.scope)

    def in_scope(self, path: str | None) -> bool:
        """Whether rules apply to this cgroup path: at or below a container cgroup in scope."""
        parts = (path or "").strip("/").split("/")
        return any(self._is_target("/" + "/".join(parts[:i])) for i in range(1, len(parts) + 1) if parts[0])

    def observes(self, path: str | None) -> bool:
        """Whether the programs run for this cgroup path (at or below an attach point)."""
        return path is not None and any(at_or_below(path, t) for t in self.targets)

    def attach_points(self, containers: list[str]) -> list[str]:
        """Where the programs go so that every container in scope, present or future, runs them."""
        prefix = literal_prefix(self.scope)
        if prefix:
            return [prefix] if self._exists(prefix) else []
        points = {posixpath.dirname(c) if posixpath.dirname(c) != "/" else c for c in containers}
        points |= {p for p in RUNTIME_PARENTS if self._exists(p)}  # the first container of a node
        return sorted(p for p in points if not any(p != q and at_or_below(p, q) for q in points))

    def make_runtime_parents(self) -> list[str]:
        """With a wildcard scope, make the cgroupfs parent of each runtime installed here, as
        the runtime itself would with its first container, so the programs are there first."""
        if literal_prefix(self.scope):
            return []
        made = []
        for rel, program in CGROUPFS_PARENTS.items():
            if shutil.which(program) and not self._exists(rel):
                os.mkdir(os.path.join(self.cgroup_root, rel.lstrip("/")))
                log.info("made %s for %s's first container", rel, program)
                made.append(rel)
        return made

    def _exists(self, rel: str) -> bool:
        return os.path.isdir(os.path.join(self.cgroup_root, rel.lstrip("/")))

    def rescan(self, force: bool = False) -> bool:
        """Attach where missing; rewrite the maps when the set of cgroups in scope changed."""
        started = time.monotonic()
        containers, scopes = self._walk()
        self.walked_at = started
        points = self.attach_points(containers)
        changed = force or scopes != self.scopes
        resync = changed or self._identities_due() or self.hashes_new
        for rel in points:
            if rel not in self.targets or force:
                self._attach(rel)
        self.targets, self.containers = points, containers
        self._write_attach_points()
        if changed:
            self.scopes = scopes
            self.scope_ids = frozenset(s.cgroup_id for s in scopes)
        if changed or self.monitored != self.scope_ids:  # or the kernel classified one itself
            self._write_monitored()
        if resync and self.ruleset is not None:
            self.sync(self.ruleset)
        return changed

    def _write_monitored(self) -> None:
        pin = self.layout.map("monitored")
        heard = list(self.heard.items())  # one step: the agent's event loop adds to it meanwhile
        unwalked = {cgid for cgid, when in heard if when >= self.walked_at}  # made after the walk
        add, gone = self.scope_ids - self.monitored, self.monitored - self.scope_ids - unwalked
        commands = [self._monitored_command(pin, i, i in self.own_wanted) for i in sorted(add)]
        commands += [bpftool.delete_command(pin, hex_bytes(CGROUP.pack(i))) for i in sorted(gone)]
        try:
            bpftool.batch(commands)
        finally:
            self._read_monitored()

    @staticmethod
    def _monitored_command(pin: str, cgid: int, own: bool) -> str:
        return bpftool.update_command(pin, hex_bytes(CGROUP.pack(cgid)), f"{MON | (MON_OWN if own else 0):02x}")

    def _read_monitored(self) -> None:
        entries = [(CGROUP.unpack(key)[0], value[0]) for key, value in batch.dump(self.layout.map("monitored"))]
        self.monitored = {cgid for cgid, _ in entries}
        self.own = {cgid for cgid, value in entries if value & MON_OWN}

    def _write_resolvers(self) -> None:
        """The trusted resolvers into `dns_resolvers` (an adopted generation's set made this one)."""
        pin = self.layout.map("dns_resolvers")
        want = {encode_resolver(a) for a in self.resolvers}
        held = {key for key, _value in batch.dump(pin)}
        commands = [bpftool.update_command(pin, hex_bytes(k), "01") for k in sorted(want - held)]
        commands += [bpftool.delete_command(pin, hex_bytes(k)) for k in sorted(held - want)]
        if commands:
            bpftool.batch(commands)

    def _write_attach_points(self) -> None:
        """The attach points' cgroup ids, for crossedge_mkdir to know a container's place."""
        want = set()
        for rel in self.targets:
            try:
                want.add(cgroup_id(os.path.join(self.cgroup_root, rel.lstrip("/"))))
            except FileNotFoundError:
                continue
        if want == self.attached_ids:
            return
        pin = self.layout.map("attach_points")
        commands = [bpftool.update_command(pin, hex_bytes(CGROUP.pack(i)), "01") for i in sorted(want)]
        commands += [bpftool.delete_command(pin, hex_bytes(CGROUP.pack(i))) for i in sorted(self.attached_ids - want)]
        bpftool.batch(commands)
        self.attached_ids = want

    def classified(self, cgid: int) -> None:
        """The kernel put this cgroup in `monitored` itself (crossedge_mkdir): the first walk
        after now lists it, or takes it out again if the agent finds it out of scope."""
        self.monitored.add(cgid)
        self.heard.setdefault(cgid, time.monotonic())

    def judged(self, cgid: int) -> bool:
        """Whether a walk made after the kernel classified this cgroup has settled it (in
        scope, with the policy written, or out of scope): a held process there may go on."""
        if cgid in self.scope_ids:
            if cgid in self.files_due or self.hashing.get(cgid):
                return False  # a held process waits for the container's files to be looked up, or hashed
            return self.ruleset is None or self.policy_version == self.ruleset.version
        return self.heard.get(cgid, float("inf")) < self.walked_at

    def pending(self) -> set[int]:
        """Container cgroups whose first exec the kernel would hold (for a restarted agent)."""
        return {CGROUP.unpack(key)[0] for key, _ in batch.dump(self.layout.map("pending"))}

    def release(self, cgids: set[int]) -> None:
        """No more holds in these cgroups: the agent has written what applies to them."""
        pin = self.layout.map("pending")
        held = self.pending() & set(cgids)  # (a hold for its files alone has no entry)
        bpftool.batch([bpftool.delete_command(pin, hex_bytes(CGROUP.pack(i))) for i in sorted(held)])
        for cgid in cgids:
            self.heard.pop(cgid, None)

    def _attach(self, rel: str) -> None:
        if rel.strip("/") == "":
            raise EnforcerError("refusing to attach at the cgroup root")
        path = os.path.join(self.cgroup_root, rel.lstrip("/"))
        try:
            present = {p["id"] for p in bpftool.cgroup_show(path)}
            for name, (attach_type, _shown) in PROGRAMS.items():
                if self.prog_ids[name] not in present:
                    bpftool.cgroup_attach(path, attach_type, self.layout.prog(name))
                    log.info("enforcing on %s (%s)", rel, attach_type)
            if not self.unix_error:
                unix_hook.attach(self.layout, path, cgroup_id(path))
        except bpftool.NotFound:
            pass  # the container went away while we looked
        except (links.LinkError, FileNotFoundError) as exc:
            if os.path.isdir(path):  # (else: it went away)
                self.unix_error = f"unix socket programs not attached at {rel} ({exc}): unix socket rules not enforced"
                log.error(self.unix_error)

    def _attach_xdp(self) -> None:
        """The blocklist program on each chosen interface: native XDP where the driver has
        it, generic otherwise. A program of ours (an older generation) is replaced; anyone
        else's is left alone, and the interface says so."""
        prog = self.layout.prog("crossedge_xdp")
        ours = bpftool.prog_show(prog)["id"]
        for spec in self.xdp_ifaces:
            netns, _, dev = spec.rpartition("/")
            try:
                attached = _xdp_on(netns or None, dev)
                if attached and attached["id"] == ours:
                    self.xdp_state[spec] = "native" if attached["mode"] == "driver" else attached["mode"]
                    continue
                if attached and not _ours(attached["id"]):
                    self.xdp_state[spec] = f"not attached: program {attached['id']} (not ours) is on it"
                    continue
                self.xdp_state[spec] = _xdp_attach(netns or None, dev, prog, replace=attached is not None)
            except bpftool.BpftoolError as exc:
                self.xdp_state[spec] = f"not attached: {exc}"
            log.info("blocklist on %s: %s", spec, self.xdp_state[spec])

    def _detach_xdp(self, ids: set[int]) -> int:
        """Our blocklist program off the chosen interfaces and every host interface it is on."""
        count = 0
        targets = [(netns or None, dev) for netns, _, dev in (s.rpartition("/") for s in self.xdp_ifaces)]
        for item in bpftool.run("net", "show") or []:
            targets += [(None, x["devname"]) for x in item.get("xdp", []) if x.get("id") in ids]
        for netns, dev in dict.fromkeys(targets):
            with contextlib.suppress(bpftool.BpftoolError):
                attached = _xdp_on(netns, dev)
                if attached and (attached["id"] in ids or _ours(attached["id"])):
                    bpftool.run("net", "detach", XDP_SHOWN[attached["mode"]], "dev", dev, json_output=False,
                                netns=netns)  # fmt: skip
                    count += 1
        return count

    def attachments(self) -> list[tuple[str, dict]]:
        """(cgroup directory, program) for every crossedge program attached anywhere."""
        found = []
        for group in bpftool.run("cgroup", "tree", self.cgroup_root) or []:
            for prog in group.get("programs", []):
                if str(prog.get("name", "")).startswith(PREFIX):
                    found.append((group["cgroup"], prog))
        return found

    def _generations(self) -> list[Layout]:
        if not self.pin_root.is_dir():
            return []
        return [Layout(p) for p in sorted(self.pin_root.iterdir()) if p.name.startswith("gen-")]

    def _pinned_ids(self, layout: Layout) -> set[int]:
        ids = set()
        for name in PROGRAMS:
            if os.path.exists(layout.prog(name)):
                ids.add(bpftool.prog_show(layout.prog(name))["id"])
        return ids

    def _detach(self, ids: set[int]) -> int:
        count = 0
        for cgroup_dir, prog in self.attachments():
            if prog["id"] in ids:
                attach_type = next(a for a, shown in PROGRAMS.values() if shown == prog["attach_type"])
                bpftool.cgroup_detach(cgroup_dir, attach_type, prog["id"])
                count += 1
        return count

    def _retire_old_generations(self) -> None:
        for old in self._generations():
            if old.root != self.layout.root:
                detached = self._detach(self._pinned_ids(old))
                shutil.rmtree(old.root, ignore_errors=True)
                log.info("retired %s (%d attachments)", old.root.name, detached)

    def uninstall(self) -> dict:
        """Detach and unpin everything under our pin root, and clear the immutable attributes
        set for write denies."""
        detached, removed = 0, []
        if self.guard.held:
            self.scopes = self._walk()[1]
            self._apply_guard(set())
        for layout in self._generations():
            detached += self._detach(self._pinned_ids(layout))
            if os.path.exists(layout.prog("crossedge_xdp")):
                detached += self._detach_xdp({bpftool.prog_show(layout.prog("crossedge_xdp"))["id"]})
            shutil.rmtree(layout.root, ignore_errors=True)
            removed.append(layout.root.name)
        if self.pin_root.is_dir() and not any(self.pin_root.iterdir()):
            self.pin_root.rmdir()
        return {"detached": detached, "generations": removed}

    # -- policy -------------------------------------------------------------------
    def sync(self, ruleset: RuleSet) -> None:
        """Write the difference between the rule set and the kernel maps. A policy the maps
        cannot hold is refused whole (the previous one keeps enforcing) and shown in health."""
        self.ruleset = ruleset
        self._find_identities(ruleset)
        self.hashes_new = False
        compiled = compile_rules(ruleset, self.scopes, self.slots, self.watches, self.scan_summary, self.identities,
                                 self.io_uring, host_mount_namespace(), dict(self.hashes))  # fmt: skip
        for name, entries in compiled.entries.items():
            if len(entries) > MAX_ENTRIES:
                self.error = (
                    f"policy {ruleset.version} needs {len(entries)} entries in {name}, which holds {MAX_ENTRIES}: "
                    f"kernel keeps policy {self.policy_version}"
                )
                self.notes = compiled.notes
                log.error(self.error)
                return
        counters = self.layout.map("counters")
        new_slots = set(compiled.slots.values()) - set(self.slots.values())
        commands = [self._quiet_command(0)]  # what the kernel remembered was judged by the patterns of before
        commands += [bpftool.update_command(counters, hex_bytes(SLOT.pack(s)), "00 " * 8) for s in sorted(new_slots)]
        deletes = []
        for name, want in compiled.entries.items():
            have, pin = self.mirror[name], self.layout.map(name)
            changed = [(k, v) for k, v in want.items() if have.get(k) != v]
            commands += [bpftool.update_command(pin, hex_bytes(k), hex_bytes(v)) for k, v in changed]
            deletes += [bpftool.delete_command(pin, hex_bytes(k)) for k in have if k not in want]
        # a cgroup's own entries are looked up once its MON_OWN is set: after they are written
        own = compiled.own & self.monitored
        monitored = self.layout.map("monitored")
        commands += [self._monitored_command(monitored, i, i in own) for i in sorted(own ^ self.own)]
        commands += deletes  # (a freed slot's counter stays: an array; it is zeroed when reused)
        commands.append(self._quiet_command(self._quiet_version(True)))  # last: on a failure it stays off
        try:
            bpftool.batch(commands)
        except bpftool.BpftoolError as exc:
            self.error = f"writing policy {ruleset.version} to the kernel failed ({exc}); the kernel holds part of it"
            self.policy_version = None
            self.synced = False
            log.error(self.error)
            self._read_maps()
            return
        self.mirror = compiled.entries
        self.kernel_rules = frozenset(compiled.kernel_rules)
        self._apply_guard(compiled.guard)
        self.own, self.own_wanted = own, compiled.own
        self.slots = compiled.slots
        self.notes = compiled.notes
        self.patterns = compiled.patterns
        self.next_expiry = compiled.next_expiry
        self.policy_version = ruleset.version
        self.synced = True
        refusing = (self.files and compiled.open_denies) or compiled.packet_denies
        self._set_compat_hook(self.compat and refusing and runs_32_bit_calls())
        self._set_packet_hook(compiled.packet_rules)
        self.error = ""
        log.info("kernel holds policy %d (%d changes)", ruleset.version, len(commands))

    def rewrite_resolved(self, name_of) -> int:
        """Point the addresses the containers learned at the patterns the rules now give their
        names (the kernel chose when each answer arrived, under the rules of then).
        `name_of` maps a name hash to its name (monitor.dns.Names.name). Returns the
        entries rewritten."""
        pin, commands, now = self.layout.map("resolved"), [], time.monotonic_ns()
        for key, value in batch.dump(pin):
            expires, name_hash, pattern = RESOLVED.unpack(value)
            name = name_of(name_hash)
            if expires <= now or name is None:
                continue  # expired (the kernel ignores it), or a name this agent never heard
            bucket, chosen = _choice(name, self.patterns, ADDR_KEY.unpack(key)[0])
            want = encode_fqdn_key(bucket, chosen.hash, chosen.kind) if chosen else FQDN_KEY.pack(0, 0, FQDN_NOTHING)
            if want != pattern:
                commands.append(
                    bpftool.update_command(pin, hex_bytes(key), hex_bytes(RESOLVED.pack(expires, name_hash, want)))
                )
        bpftool.batch(commands)
        return len(commands)

    def read_traffic(self) -> list[tuple[tuple, tuple]]:
        """What the packet programs counted since the last reading, per container and flow
        (layout.decode_traffic): the programs are pointed at the other table, and once the
        ones still counting in this one are done, it is read whole and emptied. Exact: every
        packet is in exactly one reading, across agent restarts too."""
        epoch_pin = self.layout.map("traffic_epoch")
        ((_, value),) = batch.dump(epoch_pin)
        current = SLOT.unpack(value)[0]
        bpftool.batch([bpftool.update_command(epoch_pin, hex_bytes(SLOT.pack(0)), hex_bytes(SLOT.pack(1 - current)))])
        time.sleep(TRAFFIC_GRACE)
        rows = []
        for key, per_cpu in batch.drain(self.layout.map(f"traffic{current}")):
            flow, _ = decode_traffic(key, bytes(TRAFFIC.size))
            rows.append((flow, tuple(map(sum, zip(*(TRAFFIC.unpack(v) for v in per_cpu), strict=True)))))
        return rows

    def traffic_lost(self) -> int:
        """Bytes the packet programs could count nowhere (their table and its "other" entry full)."""
        return sum(v for _k, v in batch.sums(self.layout.map("traffic_lost")))

    def dns_stats(self) -> dict[str, int]:
        """The DNS program's counts (layout.DNS_STATS, summed over CPUs): answers parsed, not
        sent, malformed, matching no query (learned from nothing), forged (dropped), queries."""
        sums = dict(batch.sums(self.layout.map("dns_stats")))
        return {name: sums.get(SLOT.pack(i), 0) for i, name in enumerate(DNS_STATS)}

    def in_kernel(self, rule_id: str) -> bool:
        """Whether the kernel judges this exec or open rule (else the agent does, after the fact)."""
        return rule_id in self.kernel_rules

    def _find_identities(self, ruleset: RuleSet) -> None:
        """The files the rules' exact paths name in each container, by identity (dev, inode),
        so a hard link or a bind mount of one is judged as the file: looked up through a
        process of the container (its root), for one that was there when the rules came, and
        through each process the kernel held at its cgroup's first exec in a mount namespace
        (`files_due`: a new container's entrypoint, before it runs)."""
        paths = frozenset(patterns.exact_paths(ruleset))
        if paths != self.id_paths:
            self.identities, self.id_looked, self.id_paths = {}, set(), paths
        alive = {s.cgroup_id for s in self.scopes}
        self.identities = {k: v for k, v in self.identities.items() if k[0] in alive}
        self.id_looked &= alive
        due, self.files_due = self.files_due, {}
        for scope in self.scopes if paths else ():
            cgid = scope.cgroup_id
            pids = due.get(cgid, set())
            if cgid not in self.id_looked and not pids and (first := self.root_process(scope.path)) is not None:
                pids = {first}
            for pid in pids:
                for path in paths:
                    if (found := identity(pid, path)) is not None:  # (not there: its path still names it)
                        self.identities[(cgid, path)] = found
                self.id_looked.add(cgid)
        for cgid, pids in due.items():  # not listed yet: looked up once it is
            if cgid not in alive and paths:
                self.files_due.setdefault(cgid, set()).update(p for p in pids if os.path.exists(f"/proc/{p}"))

    def _identities_due(self) -> bool:
        """A held process waits for its container's files to be looked up."""
        return bool(self.files_due)

    def learn_hash(self, key: tuple, digest: str) -> None:
        """A file hashed (monitor.hashing): written to `exec_hashes` with the next write, so the
        kernel decides its next exec itself (the oldest are forgotten past MAX_HASHES)."""
        self.hashes.pop(key, None)
        self.hashes[key] = digest
        while len(self.hashes) > MAX_HASHES:
            self.hashes.popitem(last=False)
        self.hashes_new = True

    def hold_for_files(self, cgid: int, pid: int) -> None:
        """The kernel held this exec, its cgroup's first in a mount namespace: look the rules'
        files up through it (`judged` waits till then)."""
        self.files_due.setdefault(cgid, set()).add(pid)

    def root_process(self, rel: str) -> int | None:
        """A process of a container whose root is the container's: one in a mount namespace of
        its own (the runtime's processes, in the host's, may not have changed root yet)."""
        host = host_mount_namespace()
        try:
            with open(os.path.join(self.cgroup_root, rel.lstrip("/"), "cgroup.procs")) as fh:
                pids = [int(line) for line in fh if line.strip()]
        except (OSError, ValueError):
            return None
        for pid in pids[:64]:
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/mnt").st_ino != host:
                    return pid
        return None

    def _apply_guard(self, wanted: set[tuple[int, str]]) -> None:
        """Make the files write denies protect immutable (monitor/guard.py); clear what no rule
        wants now."""
        if not wanted and not self.guard.held:
            return
        roots = {s.cgroup_id: pid for s in self.scopes if (pid := self.root_process(s.path)) is not None}
        self.guard.apply(wanted, roots)

    def rule_for_slot(self, slot: int) -> str:
        return next((rule_id for rule_id, s in self.slots.items() if s == slot), "")

    def counters(self) -> dict[str, int]:
        """Decisions per rule since this generation was loaded (summed over CPUs)."""
        by_slot = {slot: rule_id for rule_id, slot in self.slots.items()}
        totals: dict[str, int] = {}
        upto = max(by_slot, default=0) + 1  # slots are taken lowest first: read up to the highest live one
        for key, count in batch.sums(self.layout.map("counters"), upto=upto):
            (slot,) = SLOT.unpack(key)
            if slot and slot not in by_slot:
                continue  # a freed slot, not yet reused
            name = by_slot[slot] if slot else NO_RULE
            totals[name] = totals.get(name, 0) + count
        return totals

    def flows(self) -> list[tuple[bytes, tuple, int, int]]:
        """Every counted flow: (raw key, flow key, last window start ns, folded calls so far)."""
        return [(raw, *decode_flow(raw, value)) for raw, value in batch.dump(self.layout.map("flows"))]

    def prune_flows(self, flows: list[tuple[bytes, tuple, int, int]]) -> list[tuple]:
        """Forget flows idle for a minute once the table is half full (a full table still
        sends every call, but no longer counts). Returns the flow keys removed.

        The program counts into an entry only within 100 ms of its last sent call, so an
        entry idle for a minute is not being counted into. The one race: a flow that wakes
        up in the milliseconds between the dump and the delete, with its first call sent
        and a second one counted into the entry just before it goes; that second call is
        lost, uncounted. It needs a half-full table and that exact timing."""
        if len(flows) < MAX_FLOWS // 2:
            return []
        cutoff = time.monotonic_ns() - PRUNE_IDLE_NS
        idle = [(raw, key) for raw, key, window_ns, _ in flows if window_ns < cutoff]
        pin = self.layout.map("flows")
        bpftool.batch([bpftool.delete_command(pin, hex_bytes(raw)) for raw, _ in idle])
        return [key for _, key in idle]

    def scans(self) -> dict[int, dict]:
        """Each container's scan entry (layout.decode_scan): what the programs summed."""
        return {CGROUP.unpack(key)[0]: decode_scan(value) for key, value in batch.dump(self.layout.map("scans"))}

    def flooders(self) -> list[tuple[str, int, int, bool]]:
        """Sources a SYN flood rule holds or held: (address, until ns monotonic, slot, audit)."""
        return [decode_flooder(key, value) for key, value in batch.dump(self.layout.map("flooders"))]

    def limits(self) -> dict[int, dict]:
        """Each limited container's entry (layout.decode_limit): what its limits held back."""
        if not self.mirror[LIMIT_MAP]:
            return {}  # no rate limit written: nothing to read
        return {CGROUP.unpack(key)[0]: decode_limit(value) for key, value in batch.dump(self.layout.map("limits"))}

    def forget_scans(self, cgids) -> None:
        """Drop the entries of containers that are gone (the table is bounded)."""
        pin = self.layout.map("scans")
        bpftool.batch([bpftool.delete_command(pin, hex_bytes(CGROUP.pack(c))) for c in cgids])

    def lost(self) -> int:
        """Calls the programs could neither send nor count (summed over CPUs)."""
        return sum(count for _key, count in batch.sums(self.layout.map("lost")))

    def health(self) -> dict:
        return {
            "generation": self.layout.root.name if self.layout else "",
            "adopted": self.adopted,
            "scope": self.scope,
            "attached": list(self.targets),
            "containers": len(self.containers),
            "policy_version": self.policy_version,
            "entries": {name: len(entries) for name, entries in self.mirror.items()},
            "notes": self.notes,
            "error": self.error,
            "lifecycle_error": self.lifecycle_error,
            "xdp": dict(self.xdp_state),
            "files_error": self.files_error or self.compat_error,
            "files": self.files_hook(),
            "compat_refused": self.layout is not None and os.path.exists(self.layout.link(COMPAT)),
            "packet_sockets": self.packet_error or ("judged" if self._packet_hooked() else "no rule names them"),
            "unix_sockets": self.unix_error or "judged (connect_unix, sendmsg_unix)",
            "immutable": {
                "files": len(self.guard.held),
                "restored": self.guard.restored,
                "problems": {f"{c}:{p}": why for (c, p), why in self.guard.problems.items()},
            },  # fmt: skip
        }

    def _packet_hooked(self) -> bool:
        return self.layout is not None and os.path.exists(self.layout.link(PACKET))

    def files_hook(self) -> str:
        """How this node watches file opens, for the Nodes page."""
        if not self.files:
            return "off (--no-files)"
        attached = self.layout is not None and all(os.path.exists(self.layout.link(n)) for n in TRACEPOINTS)
        return "open() exit tracepoints (the opened file)" if attached else "not attached"

    def describe_entries(self) -> list[dict]:
        """The kernel's policy entries, readable (for `runagent --show-kernel` and tests)."""
        rows = []
        for name, entries in self.mirror.items():
            for key, value in entries.items():
                if name in (FWD_MAP, REV_MAP):
                    field, raw = decode_pat_key(key)
                    mask, watch = PAT.unpack(value)
                    text = raw.rstrip(b"\0").decode(errors="replace")
                    row = {"field": field, "pattern": text[::-1] if name == REV_MAP else text, "rules": f"{mask:#x}",
                           "exact": raw.endswith(b"\0"), "watch": access_names(watch)}  # fmt: skip
                    cgid = None
                elif name == IDS_MAP:
                    dev, ino = ID_KEY.unpack(key)
                    cgid, row = None, {"dev": dev, "ino": ino, "rules": [f"{m:#x}" for m in ID.unpack(value)]}
                elif name == CONFIG_MAP:
                    cgid, row = None, decode_pconfig(value)
                elif name == PSCOPE_MAP:
                    (cgid,) = CGROUP.unpack(key)
                    row = {"rules": [f"{m:#x}" for m in PSCOPE.unpack(value)]}
                elif name == LIMIT_MAP:
                    (cgid,) = CGROUP.unpack(key)
                    row = decode_limit(value)
                elif name in (SCAN_MAP, SCAN_EVERY_MAP, FLOOD_MAP):
                    cgid = CGROUP.unpack(key)[0] if name == SCAN_MAP else (0 if name == SCAN_EVERY_MAP else None)
                    row = decode_scan_limits(value)
                elif name == UNNAMED_MAP:
                    if not (rules := decode_fqdn_rules(value)):
                        continue  # (always written)
                    cgid, row = 0, {"rules": rules}
                elif name not in MAPS.values():
                    cgid, row = None, {"key": hex_bytes(key), "value": hex_bytes(value)}
                else:
                    net, cgid, port = decode_key(key)
                    row = {"net": str(net), "port": port} | vars(KernelRule.decode(value))
                rows.append({"map": name, "cgroup_id": cgid} | row)
        return rows
