"""The table of kernel backends the supervisor runs: one row per probe.

A row names the program, how to start it and the parser for its data lines; the
supervisor's lifecycle code is shared by all rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .parsers import connect

BPFSCRIPTS = Path(__file__).resolve().parent.parent / "bpfscripts"


@dataclass(frozen=True)
class Backend:
    name: str
    program: str  # executable looked up on PATH
    script: str  # file in bpfscripts/
    parse: Callable[[str], dict]
    install_hint: str

    def argv(self, executable: str) -> list[str]:
        return [executable, "-B", "line", "-f", "json", str(BPFSCRIPTS / self.script)]


BACKENDS = {
    "connect": Backend(
        name="connect",
        program="bpftrace",
        script="connect.bt",
        parse=connect.parse,
        install_hint="apt-get install bpftrace",
    ),
}
