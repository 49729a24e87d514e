"""Runs one backend as a child process and keeps it running.

The child is restarted with exponential backoff when it exits (reset after it has run
`stable_after` seconds); its stderr goes to the log; its non-data lines become health
figures. A bad line is skipped and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .backends import Backend
from .parsers.bpftrace import LineError, Signal, decode

log = logging.getLogger("crossedge.supervisor")
HARMLESS_STDERR = ("couldn't set RLIMIT_MEMLOCK",)  # bpftrace
LINE_LIMIT = 1 << 20
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the agent dies (even by SIGKILL), so no
    tracer is left running unread. Pinned enforcement is not a child and stays."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class BackendHealth:
    state: str = "starting"  # starting | running | backoff | failed | stopped
    pid: int | None = None
    restarts: int = 0
    attached_probes: int = 0
    events: int = 0
    lost_events: int = 0
    overflowed: int = 0  # calls the kernel could not send and counted instead: not lost
    bad_lines: int = 0
    stderr_dropped: int = 0  # stderr lines too long to read (counted once per LINE_LIMIT read)
    last_error: str = ""
    since: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class Supervisor:
    def __init__(
        self,
        backend: Backend,
        on_event: Callable[[str, dict], None],
        *,
        on_map: Callable[[str, dict], None] | None = None,
        on_start: Callable[[str], None] | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
    ):
        self.backend = backend
        self.on_event = on_event
        self.on_map = on_map  # bpftrace map prints (connect.bt's in-kernel counts)
        self.on_start = on_start  # a new child: its kernel-side state starts from zero
        self.min_backoff, self.max_backoff, self.stable_after = min_backoff, max_backoff, stable_after
        self.health = BackendHealth(since=time.time())
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._last_stderr = ""
        self.ready = asyncio.Event()  # set once the probes are attached

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            await self._run_once()
            if self._stopping:
                break
            failures = 0 if time.monotonic() - started >= self.stable_after else failures + 1
            delay = min(self.max_backoff, self.min_backoff * 2 ** max(0, failures - 1))
            self.health.restarts += 1
            self._set_state("backoff")
            log.warning("backend %s stopped (%s); restart in %.1fs", self.backend.name, self.health.last_error, delay)
            await asyncio.sleep(delay)
        self._set_state("stopped")

    async def _run_once(self) -> None:
        executable = shutil.which(self.backend.program)
        if executable is None:
            self.health.last_error = (
                f"{self.backend.program} not found on PATH; install it ({self.backend.install_hint})"
            )
            self._set_state("failed")
            return
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.backend.command(executable),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
                start_new_session=True,  # our signals, not the terminal's, stop it
                preexec_fn=die_with_parent,
                env={**os.environ, **dict(self.backend.env)} if self.backend.env else None,
            )
        except OSError as exc:
            self.health.last_error = f"cannot start {executable}: {exc}"
            self._set_state("failed")
            return
        self.health.pid = self._proc.pid
        self._set_state("starting")
        stderr_task = asyncio.create_task(self._pump_stderr(self._proc.stderr))
        await self._pump_stdout(self._proc.stdout)
        code = await self._proc.wait()
        await stderr_task
        self.health.pid = None
        self.ready.clear()
        if not self._stopping:
            self.health.last_error = f"exited with status {code}" + (
                f": {self._last_stderr}" if self._last_stderr else ""
            )

    async def _pump_stdout(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: the reader drops it
                self.health.bad_lines += 1
                continue
            if not line:
                return
            if self.backend.framing == "perf-lines":
                self.handle_record(line)  # the backend's parser reads the reader's lines
            else:
                self.handle_line(line)

    def handle_line(self, line: bytes | str) -> None:
        """One stdout line: an event, a health signal, or a counted bad line."""
        if not line.strip():
            return  # bpftrace prints empty lines as it exits
        try:
            item = decode(line)
        except LineError as exc:
            self._bad(exc, line)
            return
        if isinstance(item, Signal):
            self._signal(item)
        else:
            self.handle_record(item)

    def handle_record(self, record) -> None:
        """One payload (bpftrace printf text, or a bpftool record) through the backend's parser."""
        try:
            event = self.backend.parse(record)
        except LineError as exc:
            self._bad(exc, record)
            return
        if isinstance(event, Signal):
            self._signal(event)
            return
        self.health.events += 1
        self.on_event(self.backend.name, event)

    def _bad(self, exc: Exception, raw) -> None:
        self.health.bad_lines += 1
        if self.health.bad_lines <= 10 or self.health.bad_lines % 1000 == 0:
            log.warning("backend %s: bad input skipped (%s): %.200r", self.backend.name, exc, raw)

    def _signal(self, sig: Signal) -> None:
        if sig.kind == "attached":
            if self.on_start is not None:
                self.on_start(self.backend.name)
            self.health.attached_probes = sig.count
            self._set_state("running")
            self.ready.set()
        elif sig.kind == "map" and self.on_map is not None:
            try:
                self.on_map(self.backend.name, sig.raw)
            except LineError as exc:
                self._bad(exc, sig.raw)
        elif sig.kind == "lost":
            self.health.lost_events += sig.count
        elif sig.kind == "overflow":
            self.health.overflowed += sig.count
            log.warning("backend %s: kernel dropped %d events", self.backend.name, sig.count)

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        self._last_stderr = ""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: dropped by the reader, counted here
                self.health.stderr_dropped += 1
                log.warning("backend %s: a stderr line over %d bytes was dropped", self.backend.name, LINE_LIMIT)
                continue
            if not line:
                return
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            if any(h in text for h in HARMLESS_STDERR):
                log.debug("backend %s: %s", self.backend.name, text)
                continue
            self._last_stderr = text[:500]
            log.warning("backend %s: %s", self.backend.name, text)

    def _set_state(self, state: str) -> None:
        if state != self.health.state:
            self.health.state = state
            self.health.since = time.time()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        proc = self._proc
        if proc and proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # bpftrace detaches its probes on SIGINT
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
