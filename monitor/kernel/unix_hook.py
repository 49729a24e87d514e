"""Loading and attaching the unix socket programs (bpfscripts/unix_connect.bpf.c), which
bpftool 7.1 and libbpf 1.1 do not know how to load or attach.

The smallest honest mechanism, beside links.py's: libbpf itself (Debian's libbpf.so.1,
through ctypes) opens the object, is told each program's type and attach type (the names
`cgroup/connect_unix` and `cgroup/sendmsg_unix` came after it), uses the maps
enforce_connect.bpf.o pinned (so the policy, counters and records are one), and loads it;
the programs are pinned beside the others, and attached to each attach point by a cgroup
link (BPF_LINK_CREATE), pinned too: removing the generation's directory detaches them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from .links import BPF_LINK_CREATE, LinkError, _bpf, obj_get, obj_pin

OBJECT_NAME = "unix_connect.bpf.o"
BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18
# program -> its attach type (BPF_CGROUP_UNIX_CONNECT, BPF_CGROUP_UNIX_SENDMSG: Linux 6.7)
UNIX_CONNECT = "crossedge_unix"
PROGRAMS = {UNIX_CONNECT: 49, "crossedge_unix_dg": 50}
SHARED_MAPS = ("monitored", "unix_rules", "counters", "procs", "proc_lost")


def _libbpf():
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    for name, restype, argtypes in (
        ("bpf_object__open_file", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
        ("bpf_object__load", ctypes.c_int, [ctypes.c_void_p]),
        ("bpf_object__close", None, [ctypes.c_void_p]),
        ("bpf_object__find_program_by_name", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        ("bpf_object__find_map_by_name", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        ("bpf_program__set_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
        ("bpf_program__set_expected_attach_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
        ("bpf_program__fd", ctypes.c_int, [ctypes.c_void_p]),
        ("bpf_map__reuse_fd", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def load(obj_path: str, layout) -> None:
    """Load the object's programs over `layout`'s pinned maps and pin them there (LinkError
    on any failure, e.g. a kernel before 6.7; nothing is left pinned then)."""
    try:
        lib = _libbpf()
    except OSError as exc:
        raise LinkError(2, f"libbpf.so.1 not found ({exc}): install libbpf1") from None
    obj = lib.bpf_object__open_file(os.fsencode(obj_path), None)
    if not obj:
        raise LinkError(ctypes.get_errno(), f"opening {obj_path}: {os.strerror(ctypes.get_errno())}")
    fds, pinned = [], []
    try:
        for name, attach_type in PROGRAMS.items():
            prog = lib.bpf_object__find_program_by_name(obj, name.encode())
            if not prog:
                raise LinkError(2, f"{obj_path} has no program {name}")
            lib.bpf_program__set_type(prog, BPF_PROG_TYPE_CGROUP_SOCK_ADDR)
            lib.bpf_program__set_expected_attach_type(prog, attach_type)
        for name in SHARED_MAPS:
            fds.append(obj_get(layout.map(name)))
            if lib.bpf_map__reuse_fd(lib.bpf_object__find_map_by_name(obj, name.encode()), fds[-1]):
                raise LinkError(ctypes.get_errno(), f"sharing map {name}: {os.strerror(ctypes.get_errno())}")
        if err := lib.bpf_object__load(obj):
            raise LinkError(-err, f"loading {os.path.basename(obj_path)}: {os.strerror(-err)} (a kernel before 6.7?)")
        for name in PROGRAMS:
            obj_pin(lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, name.encode())), layout.prog(name))
            pinned.append(layout.prog(name))
    except LinkError:
        for path in pinned:
            os.unlink(path)
        raise
    finally:
        for fd in fds:
            os.close(fd)
        lib.bpf_object__close(obj)


def link_name(prog: str, cgroup_id: int) -> str:
    return f"{prog}-{cgroup_id}"


def attach(layout, cgroup_dir: str, cgroup_id: int) -> None:
    """Both programs on one cgroup by pinned links (idempotent)."""
    for name, attach_type in PROGRAMS.items():
        pin = layout.link(link_name(name, cgroup_id))
        if os.path.exists(pin):
            continue
        prog = obj_get(layout.prog(name))
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fields = [(0, "c_uint32", prog), (4, "c_uint32", target), (8, "c_uint32", attach_type)]
            link = _bpf(BPF_LINK_CREATE, fields, f"attaching {name} to {cgroup_dir}")
            try:
                os.makedirs(os.path.dirname(pin), exist_ok=True)
                obj_pin(link, pin)
            finally:
                os.close(link)
        finally:
            os.close(target)
            os.close(prog)


def detach(layout, cgroup_id: int) -> None:
    """Both programs off one cgroup (their links unpinned)."""
    for name in PROGRAMS:
        try:
            os.unlink(layout.link(link_name(name, cgroup_id)))
        except FileNotFoundError:
            pass
