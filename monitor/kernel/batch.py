"""Read (and empty) a pinned map in a few system calls (BPF_MAP_LOOKUP_BATCH and
BPF_MAP_LOOKUP_AND_DELETE_BATCH, through libbpf and ctypes): the agent's periodic reads.

`bpftool -j map dump` prints every byte of every entry (per CPU, for a per-CPU map) as JSON,
and each entry then needs its own `map delete` command: draining the 32,768-flow traffic
table that way took seconds of CPU, which a node under a connect() storm takes from its
containers, and the tables read every second or two (flows, groups, scans, counters: ten of
them) cost a bpftool process each, most of an idle agent's CPU. Here the kernel copies keys
and values into two buffers, 4,096 entries a call; key and value sizes and whether values
are per CPU come from the map itself (BPF_OBJ_GET_INFO_BY_FD). LPM tries have no batch
calls: the policy maps, read only when an agent adopts them, stay with bpftool.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .perf_reader import libbpf

CHUNK = 4096  # entries per call
PER_CPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH

_lib = None


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (the kernel fills as much as it is given)."""

    _fields_ = [(name, ctypes.c_uint32) for name in ("type", "id", "key_size", "value_size", "max_entries", "flags")]


def _libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = libbpf()
        args = [ctypes.c_int, *[ctypes.c_void_p] * 4, ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
        for name in ("bpf_map_lookup_batch", "bpf_map_lookup_and_delete_batch"):
            getattr(lib, name).argtypes = args
        lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        lib.libbpf_num_possible_cpus.restype = ctypes.c_int
        _lib = lib
    return _lib


def possible_cpus() -> int:
    return _libbpf().libbpf_num_possible_cpus()


def drain(pin: str) -> list[tuple[bytes, list[bytes]]]:
    """Every entry of a hash map, removed from it: (key, [value] or one value per possible CPU).
    Exact only when nothing writes the map meanwhile (the traffic table's epoch flip sees to it)."""
    return _batch(pin, "bpf_map_lookup_and_delete_batch")


def dump(pin: str) -> list[tuple[bytes, bytes]]:
    """Every entry of a map whose values are not per CPU: (key, value)."""
    return [(key, value) for key, (value,) in _batch(pin, "bpf_map_lookup_batch")]


def sums(pin: str, upto: int | None = None) -> list[tuple[bytes, int]]:
    """(key, value summed over CPUs) for each entry of a per-CPU map of u64 counters (of an
    array's first `upto` entries only, when given)."""
    return [
        (key, sum(int.from_bytes(v[:8], "little") for v in values))
        for key, values in _batch(pin, "bpf_map_lookup_batch", upto)
    ]


def _info(lib, fd: int, pin: str) -> MapInfo:
    info, size = MapInfo(), ctypes.c_uint32(ctypes.sizeof(MapInfo))
    if lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"reading what {pin} is: {os.strerror(err)}")
    return info


def _batch(pin: str, call: str, upto: int | None = None) -> list[tuple[bytes, list[bytes]]]:
    lib = _libbpf()
    fd = lib.bpf_obj_get(os.fsencode(pin))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"cannot open {pin}: {os.strerror(ctypes.get_errno())}")
    try:
        info = _info(lib, fd, pin)
        key_size, value_size, per_cpu = info.key_size, info.value_size, info.type in PER_CPU_TYPES
        cpus = possible_cpus() if per_cpu else 1
        stride = (value_size + 7) // 8 * 8 if per_cpu else value_size  # the kernel rounds per-CPU values up
        upto = info.max_entries if upto is None else min(upto, info.max_entries)
        chunk = max(1, min(CHUNK, upto))
        keys = ctypes.create_string_buffer(key_size * chunk)
        values = ctypes.create_string_buffer(stride * cpus * chunk)
        token_in, token_out = (
            ctypes.create_string_buffer(max(key_size, 8)),
            ctypes.create_string_buffer(max(key_size, 8)),
        )
        entries, first = [], True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = getattr(lib, call)(fd, None if first else token_in, token_out, keys, values, ctypes.byref(count), None)
            err = ctypes.get_errno() if rc < 0 else 0
            if rc < 0 and err != errno.ENOENT:
                raise OSError(err, f"reading {pin}: {os.strerror(err)}")
            raw_keys, raw_values = keys.raw, values.raw
            for i in range(count.value):
                base = i * stride * cpus
                entries.append((
                    raw_keys[i * key_size:(i + 1) * key_size],
                    [raw_values[base + c * stride:base + c * stride + value_size] for c in range(cpus)],
                ))  # fmt: skip
            if rc < 0 or len(entries) >= upto:  # ENOENT: that was the last of them
                return entries[:upto]
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False
    finally:
        os.close(fd)
