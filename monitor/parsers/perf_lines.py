"""Decoding of monitor/kernel/perf_reader.py's lines: the programs' calls (`events`), the
container lifecycle records (`lifecycle`), the process records (`procs`) and the DNS
answers (`dns`).

A line is `<cpu> <hex bytes>` (one record), `lost <cpu> <count>` (the kernel's count of
records a full buffer refused) or `ready` (the buffers are open: nothing after this point
is missed).
"""

from __future__ import annotations

from ..kernel.layout import decode_dns, decode_event, decode_lifecycle, decode_proc
from .bpftrace import LineError, Signal


def parse(line: bytes, decode=decode_event) -> dict | Signal:
    """One record the programs sent, or a Signal.

    The kernel's lost-sample count is `overflow`, not `lost`: a full buffer makes
    bpf_perf_event_output fail, and the programs then count the call with its flow (or in
    their `lost` maps) themselves, so counting it as lost here too would count it twice."""
    head, _, rest = line.strip().partition(b" ")
    if head == b"ready" and not rest:
        return Signal("attached", 1, line)
    if head == b"lost":
        cpu, _, count = rest.partition(b" ")
        if not (cpu.isdigit() and count.isdigit()):
            raise LineError("lost line without a cpu and a count")
        return Signal("overflow", int(count), line)
    if not head.isdigit():
        raise LineError("not a record line")
    try:
        return decode(bytes.fromhex(rest.decode("ascii")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LineError(f"bad kernel record: {exc}") from None


def parse_lifecycle(line: bytes) -> dict | Signal:
    """A container cgroup the kernel classified at mkdir, or a process it held at exec.
    A lost record costs no hold: the program holds only what it could report."""
    return parse(line, decode_lifecycle)


def parse_proc(line: bytes) -> dict | Signal:
    """An exec or exit in a monitored cgroup (a lost one is counted by the program too)."""
    return parse(line, decode_proc)


def parse_dns(line: bytes) -> dict | Signal:
    """A DNS response a monitored container received (a lost one is counted by the program)."""
    return parse(line, decode_dns)
