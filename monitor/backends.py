"""The table of kernel backends the supervisor runs: one row per probe.

A row names the program, how to start it and the parser for its data lines; the
supervisor's lifecycle code is shared by all rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .parsers import connect

BPFSCRIPTS = Path(__file__).resolve().parent.parent / "bpfscripts"


@dataclass(frozen=True)
class Backend:
    name: str
    program: str  # executable looked up on PATH
    command: Callable[[str], list[str]]  # argv, given the program's full path
    parse: Callable  # payload or record -> event dict (or a Signal)
    install_hint: str
    framing: str = "lines"  # "lines": bpftrace -f json; "perf-lines": monitor/kernel/perf_reader.py
    env: tuple[tuple[str, str], ...] = ()  # added to the agent's environment


# connect.bt's maps (@printed, @folded, @call4) hold at most this many keys, so the tracer's
# memory is bounded (bpftrace's own default is 4096). Past it a new flow is not remembered:
# each of its calls is printed (and folded in user space), so nothing is lost.
TRACER_MAP_KEYS = 16384


def bpftrace_script(script: str) -> Callable[[str], list[str]]:
    return lambda exe: [exe, "-B", "line", "-f", "json", str(BPFSCRIPTS / script)]


PERF_READER = Path(__file__).resolve().parent / "kernel" / "perf_reader.py"


def perf_pipe(name: str, map_pin: Callable[[], str], parse: Callable, watermark: int = 0) -> Backend:
    """A pinned perf event array read by monitor/kernel/perf_reader.py (libbpf's consumer),
    as a child of the agent. `map_pin` is asked at each (re)start, so a restart follows a
    new program generation; `watermark` (bytes) batches its wakeups."""
    extra = ["--watermark", str(watermark)] if watermark else []
    return Backend(
        name=name,
        program=sys.executable,
        command=lambda exe: [exe, str(PERF_READER), map_pin(), *extra],
        parse=parse,
        install_hint="apt-get install libbpf1",
        framing="perf-lines",
    )


BACKENDS = {
    "connect": Backend(
        name="connect",
        program="bpftrace",
        command=bpftrace_script("connect.bt"),
        parse=connect.parse,
        install_hint="apt-get install bpftrace",
        env=(("BPFTRACE_MAP_KEYS_MAX", str(TRACER_MAP_KEYS)),),
    ),
}
