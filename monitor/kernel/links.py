"""Attaching the tp_btf and tracepoint programs, which bpftool 7.1 loads but cannot attach.

A few syscalls through ctypes, the smallest honest mechanism: BPF_OBJ_GET opens the
program bpftool pinned; a tp_btf program is attached by BPF_RAW_TRACEPOINT_OPEN (it names
its tracepoint in its own BTF), a tracepoint program by perf_event_open() of the
tracepoint (its id from tracefs) and BPF_LINK_CREATE on that perf event; BPF_OBJ_PIN pins
the returned link. A pinned link outlives the agent, like the cgroup attachments (the
link holds its perf event); removing the pin (with its generation's directory) detaches
it once nothing else holds it.
"""

from __future__ import annotations

import ctypes
import os

BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_PERF_EVENT = 41  # the attach type of a link on a perf event
SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}[os.uname().machine]
PERF_TYPE_TRACEPOINT = 2
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7: every field used here, the rest zero
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
ATTR_SIZE = 128  # larger than every bpf_attr member used here; the kernel checks the tail is zero

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LinkError(OSError):
    pass


def _bpf(cmd: int, fields: list[tuple[int, str, int]], what: str) -> int:
    """bpf(cmd, attr) with `fields` as (offset, ctypes type code, value); returns the fd."""
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    for offset, code, value in fields:
        getattr(ctypes, code).from_buffer(attr, offset).value = value
    ret = _libc.syscall(SYS_BPF, cmd, attr, ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise LinkError(err, f"{what}: {os.strerror(err)}")
    return ret


def obj_get(path: str) -> int:
    """An fd for a pinned program, map or link."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, [(0, "c_uint64", ctypes.addressof(name))], f"opening {path}")


def obj_pin(fd: int, path: str) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, [(0, "c_uint64", ctypes.addressof(name)), (8, "c_uint32", fd)], f"pinning {path}")


def tracepoint_id(name: str) -> int:
    """The id tracefs gives a tracepoint ("syscalls/sys_enter_openat")."""
    for root in TRACEFS:
        try:
            with open(os.path.join(root, "events", name, "id")) as fh:
                return int(fh.read())
        except FileNotFoundError:
            continue
    raise LinkError(2, f"tracepoint {name} not found under {' or '.join(TRACEFS)} (is tracefs mounted?)")


def attach_tracepoint(prog_pin: str, tracepoint: str, link_pin: str) -> None:
    """Attach a pinned tracepoint program at `tracepoint` and pin the link (idempotent).
    One perf event on CPU 0 serves every CPU: a tracepoint runs its BPF program before
    the perf event's own CPU filter."""
    if os.path.exists(link_pin):
        return
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    ctypes.c_uint32.from_buffer(attr, 0).value = PERF_TYPE_TRACEPOINT
    ctypes.c_uint32.from_buffer(attr, 4).value = PERF_ATTR_SIZE
    ctypes.c_uint64.from_buffer(attr, 8).value = tracepoint_id(tracepoint)
    perf = _libc.syscall(SYS_PERF_EVENT_OPEN, attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if perf < 0:
        err = ctypes.get_errno()
        raise LinkError(err, f"perf_event_open of {tracepoint}: {os.strerror(err)}")
    try:
        prog = obj_get(prog_pin)
        try:
            fields = [(0, "c_uint32", prog), (4, "c_uint32", perf), (8, "c_uint32", BPF_PERF_EVENT)]
            link = _bpf(BPF_LINK_CREATE, fields, f"attaching {os.path.basename(prog_pin)} to {tracepoint}")
            _libc.ioctl(perf, PERF_EVENT_IOC_ENABLE, 0)
            _pin_link(link, link_pin)
        finally:
            os.close(prog)
    finally:
        os.close(perf)


def attach_tracing(prog_pin: str, link_pin: str) -> None:
    """Attach a pinned tp_btf program at its tracepoint and pin the link (idempotent)."""
    if os.path.exists(link_pin):
        return
    prog = obj_get(prog_pin)
    try:
        link = _bpf(BPF_RAW_TRACEPOINT_OPEN, [(8, "c_uint32", prog)], f"attaching {os.path.basename(prog_pin)}")
        _pin_link(link, link_pin)
    finally:
        os.close(prog)


def _pin_link(link: int, link_pin: str) -> None:
    """Pin a new link (it then outlives this process) and close our fd of it."""
    try:
        os.makedirs(os.path.dirname(link_pin), exist_ok=True)
        obj_pin(link, link_pin)
    finally:
        os.close(link)
