"""Attaching the tp_btf programs, which bpftool 7.1 loads but cannot attach.

Three bpf() commands through ctypes, the smallest honest mechanism: BPF_OBJ_GET opens the
program bpftool pinned, BPF_RAW_TRACEPOINT_OPEN attaches it (a tp_btf program names its
tracepoint in its own BTF, so no name is passed) and BPF_OBJ_PIN pins the returned link.
A pinned link outlives the agent, like the cgroup attachments; removing the pin (with its
generation's directory) detaches it once nothing else holds it.
"""

from __future__ import annotations

import ctypes
import os

BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_RAW_TRACEPOINT_OPEN = 17
SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
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


def attach_tracing(prog_pin: str, link_pin: str) -> None:
    """Attach a pinned tp_btf program at its tracepoint and pin the link (idempotent)."""
    if os.path.exists(link_pin):
        return
    prog = obj_get(prog_pin)
    try:
        link = _bpf(BPF_RAW_TRACEPOINT_OPEN, [(8, "c_uint32", prog)], f"attaching {os.path.basename(prog_pin)}")
        try:
            os.makedirs(os.path.dirname(link_pin), exist_ok=True)
            obj_pin(link, link_pin)
        finally:
            os.close(link)
    finally:
        os.close(prog)
