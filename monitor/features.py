"""What this node's kernel and tools offer, probed once at agent start.

Edge fleets run mixed kernels. The agent reports the probe in its hello (the Nodes page
shows a matrix across nodes) and degrades with a stated reason instead of failing:
no tracepoints -> no connect tracing; no BTF, cgroup sock_addr programs or LPM tries ->
monitoring without kernel enforcement.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from .cgroups import cgroup2_mount

TRACEFS = "/sys/kernel/tracing/events"
TRACEPOINTS = {  # feature -> tracepoint directory the backends attach to
    "tracepoint_connect": "syscalls/sys_enter_connect",
    "tracepoint_exec": "sched/sched_process_exec",
    "tracepoint_openat": "syscalls/sys_enter_openat",  # file opens (file.bpf.h): no fs tracepoints here
    "tracepoint_sock_state": "sock/inet_sock_set_state",
}
BPF_FEATURES = {  # feature -> (section, key) in `bpftool -j feature probe kernel`
    "cgroup_connect_hooks": ("program_types", "have_cgroup_sock_addr_prog_type"),
    "lpm_trie": ("map_types", "have_lpm_trie_map_type"),
    "ring_buffer": ("map_types", "have_ringbuf_map_type"),
    "perf_event_array": ("map_types", "have_perf_event_array_map_type"),
    "percpu_hash": ("map_types", "have_percpu_hash_map_type"),
    # Loadable here? (BPF LSM listed as active is not enough: this kernel refuses the load.)
    # Exec rules kill from the sched_process_exec program either way; LSM or fentry hooks
    # would let a deny fail the call instead, where a node loads them.
    "bpf_lsm_programs": ("program_types", "have_lsm_prog_type"),
    "fentry_programs": ("program_types", "have_tracing_prog_type"),
}
ENFORCEMENT_NEEDS = ("btf", "cgroup2", "cgroup_connect_hooks", "lpm_trie", "perf_event_array", "percpu_hash")
# Shown in this order on the Nodes page.
FEATURES = ("btf", "cgroup2", *TRACEPOINTS, *BPF_FEATURES)


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"v(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else ""


def _bpftool_probe() -> dict:
    if shutil.which("bpftool") is None:
        return {}
    try:
        out = subprocess.run(
            ["bpftool", "-j", "feature", "probe", "kernel"], capture_output=True, text=True, timeout=30
        ).stdout
        return json.loads(out)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}


def probe() -> dict:
    """{"kernel": release, "tools": {...}, "features": {name: bool}}."""
    features = {"btf": os.path.exists("/sys/kernel/btf/vmlinux")}
    try:
        cgroup2_mount()
        features["cgroup2"] = True
    except RuntimeError:
        features["cgroup2"] = False
    for name, path in TRACEPOINTS.items():
        features[name] = os.path.isdir(os.path.join(TRACEFS, path))
    probed = _bpftool_probe()
    for name, (section, key) in BPF_FEATURES.items():
        features[name] = bool(probed.get(section, {}).get(key, False))
    return {
        "kernel": os.uname().release,
        "tools": {"bpftool": _version(["bpftool", "version"]), "bpftrace": _version(["bpftrace", "--version"])},
        "features": features,
    }


def missing_for_enforcement(report: dict) -> list[str]:
    return [name for name in ENFORCEMENT_NEEDS if not report["features"].get(name)]


def missing_for_tracing(report: dict) -> list[str]:
    missing = [] if report["tools"].get("bpftrace") else ["bpftrace"]
    return missing + [name for name in ("tracepoint_connect",) if not report["features"].get(name)]
