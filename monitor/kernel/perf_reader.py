"""Read a pinned perf event array with libbpf's perf_buffer, one line per record.

    python -m monitor.kernel.perf_reader PIN [--pages 64]

`bpftool -j map event_pipe` prints every byte of every record as a JSON number; at a few
thousand records a second that printing, and parsing it again, took more CPU than the
workload being watched (fork+exec ran at 0.6 of its rate with bpftool reading, measured
in bench/processes.py). This reader is libbpf's own consumer (perf_buffer__new/poll,
through ctypes: Debian's libbpf1, which the product needs anyway) and writes each record
as `<cpu> <hex bytes>` and each kernel loss as `lost <cpu> <count>`, flushed per poll, for
the agent's supervisor to read like any backend's lines (monitor/parsers/perf_lines.py).
It runs as the agent's child so a crash costs a restart, never the agent.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import sys

SAMPLE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
LOST = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64)
EVENT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)  # perf_buffer_event_fn
PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT, PERF_SAMPLE_RAW = 1, 10, 1 << 10
PERF_ATTR_WATERMARK = 1 << 14  # the flags bit: wake the reader per `wakeup` bytes, not per record
PERF_RECORD_LOST, PERF_RECORD_SAMPLE = 2, 9
LIBBPF_PERF_EVENT_CONT = -2


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr, as far as a BPF output buffer needs it (zero after)."""

    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("wakeup", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("rest", ctypes.c_uint8 * 80)]  # fmt: skip


def libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
    lib.perf_buffer__new.restype = ctypes.c_void_p
    lib.perf_buffer__new.argtypes = [ctypes.c_int, ctypes.c_size_t, SAMPLE, LOST, ctypes.c_void_p, ctypes.c_void_p]
    lib.perf_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.perf_buffer__new_raw.restype = ctypes.c_void_p
    lib.perf_buffer__new_raw.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.POINTER(PerfEventAttr), EVENT,
                                         ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
    lib.perf_buffer__consume.argtypes = [ctypes.c_void_p]
    lib.perf_buffer__free.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.restype = ctypes.c_long
    return lib


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pin", help="the pinned BPF_MAP_TYPE_PERF_EVENT_ARRAY")
    parser.add_argument("--pages", type=int, default=64, help="pages of buffer per CPU (a power of two)")
    parser.add_argument("--watermark", type=int, default=0, metavar="BYTES",
                        help="wake up once this much is buffered (and every 100 ms), not per record: for a pipe "
                        "whose records may come thousands a second and can wait a little")  # fmt: skip
    args = parser.parse_args(argv)
    lib = libbpf()
    fd = lib.bpf_obj_get(os.fsencode(args.pin))
    if fd < 0:
        print(f"cannot open {args.pin}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    lines: list[bytes] = []

    def sample(_ctx, cpu, data, size):
        lines.append(b"%d %s\n" % (cpu, ctypes.string_at(data, size).hex().encode()))

    def lost(_ctx, cpu, count):
        lines.append(b"lost %d %d\n" % (cpu, count))

    def event(_ctx, cpu, header):
        kind, size = ctypes.c_uint32.from_address(header).value, ctypes.c_uint16.from_address(header + 6).value
        if kind == PERF_RECORD_SAMPLE and size >= 12:
            sample(None, cpu, header + 12, ctypes.c_uint32.from_address(header + 8).value)
        elif kind == PERF_RECORD_LOST and size >= 24:
            lost(None, cpu, ctypes.c_uint64.from_address(header + 16).value)
        return LIBBPF_PERF_EVENT_CONT

    on_sample, on_lost, on_event = SAMPLE(sample), LOST(lost), EVENT(event)  # kept referenced while libbpf calls
    if args.watermark:
        attr = PerfEventAttr(type=PERF_TYPE_SOFTWARE, size=ctypes.sizeof(PerfEventAttr),
                             config=PERF_COUNT_SW_BPF_OUTPUT, sample_period=1, sample_type=PERF_SAMPLE_RAW,
                             flags=PERF_ATTR_WATERMARK, wakeup=args.watermark)  # fmt: skip
        pb = lib.perf_buffer__new_raw(fd, args.pages, ctypes.byref(attr), on_event, None, None)
    else:
        pb = lib.perf_buffer__new(fd, args.pages, on_sample, on_lost, None, None)
    if not pb or lib.libbpf_get_error(pb):
        print(f"cannot read {args.pin}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):  # the supervisor stops its children with SIGINT
        signal.signal(sig, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        while True:
            # a record wakes the poll (or the watermark does, and what stays under it is
            # consumed every 100 ms); a signal ends it. No timeout otherwise: idle, no wakeups.
            n = lib.perf_buffer__poll(pb, 100 if args.watermark else -1)
            if n < 0 and -n != 4:  # EINTR is a signal on its way
                print(f"perf_buffer__poll: {os.strerror(-n)}", file=sys.stderr)
                return 1
            if args.watermark:
                lib.perf_buffer__consume(pb)  # what stayed under the watermark
            if lines:
                out.write(b"".join(lines))
                out.flush()
                lines.clear()
    except BrokenPipeError:
        return 0
    finally:
        lib.perf_buffer__free(pb)


if __name__ == "__main__":
    sys.exit(main())
