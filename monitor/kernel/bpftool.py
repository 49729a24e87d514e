"""Every bpftool call the product makes, with errors a person can act on.

bpftool is the only loader: programs, attachments, map writes and map reads all go
through `run` or `batch` here, so one place knows its output formats and failure modes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

INSTALL_HINT = "apt-get install bpftool"
TIMEOUT = 60.0


class BpftoolError(RuntimeError):
    """bpftool failed; `detail` is its own message."""

    def __init__(self, what: str, detail: str):
        self.what, self.detail = what, detail.strip()
        super().__init__(f"{what}: {self.detail}" if self.detail else what)


class BpftoolMissing(BpftoolError):
    pass


class VerifierRejected(BpftoolError):
    """The kernel refused to load a program; `detail` holds the verifier log."""


class MapFull(BpftoolError):
    pass


class NotFound(BpftoolError):
    pass


def executable() -> str:
    path = shutil.which("bpftool")
    if path is None:
        raise BpftoolMissing("bpftool not found on PATH", f"install it ({INSTALL_HINT})")
    return path


def _classify(what: str, detail: str) -> BpftoolError:
    text = detail.lower()
    if "verifier" in text or "prog load log" in text or "permission denied" in text and "load" in what:
        return VerifierRejected(what, detail)
    if "no space left on device" in text or "argument list too long" in text:
        return MapFull(what, detail)
    if "no such file or directory" in text:
        return NotFound(what, detail)
    return BpftoolError(what, detail)


def run(*args: str, json_output: bool = True, stdin: str | None = None, timeout: float = TIMEOUT,
        netns: str | None = None):  # fmt: skip
    """One bpftool command; its JSON output parsed (None when it prints nothing). `netns`: run
    it in that named network namespace (/run/netns/NAME), for its devices."""
    argv = [executable(), *(["-j"] if json_output else []), *args]
    if netns:
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    what = "bpftool " + " ".join(args[:4])
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BpftoolError(what, f"no answer within {timeout:.0f}s") from None
    out = proc.stdout.strip()
    parsed = None
    garbled = ""
    if json_output and out:
        try:
            parsed = json.loads(out)
        except json.JSONDecodeError as exc:
            garbled = f"unreadable JSON from bpftool ({exc}): {out[:200]!r}"
    if proc.returncode != 0:
        detail = parsed.get("error", "") if isinstance(parsed, dict) else ""
        raise _classify(what, "\n".join(x for x in (detail, proc.stderr.strip()) if x) or f"status {proc.returncode}")
    if garbled:  # never an empty answer: an empty map dump would read as "nothing pinned, no flows"
        raise BpftoolError(what, garbled)
    return parsed if json_output else out


def batch(commands: list[str]) -> None:
    """Many commands in one bpftool process (map writes); stops at the first failure."""
    if commands:
        run("batch", "file", "-", json_output=False, stdin="\n".join(commands) + "\n", timeout=TIMEOUT * 5)


# -- the commands the enforcer needs ----------------------------------------------
def loadall(obj: str, progs_dir: str, maps_dir: str) -> None:
    """Load every program in `obj`, pinning programs in `progs_dir` and maps in `maps_dir`."""
    os.makedirs(maps_dir, exist_ok=True)  # bpftool makes the last level only, and only for progs
    os.makedirs(os.path.dirname(progs_dir.rstrip("/")), exist_ok=True)
    run("prog", "loadall", obj, progs_dir, "pinmaps", maps_dir, json_output=False)


def prog_show(pin: str) -> dict:
    return run("prog", "show", "pinned", pin)


def map_show(pin: str) -> dict:
    return run("map", "show", "pinned", pin)


def map_dump(pin: str) -> list[dict]:
    return run("map", "dump", "pinned", pin) or []


def cgroup_show(path: str) -> list[dict]:
    """Programs attached to this cgroup itself (not inherited)."""
    return run("cgroup", "show", path) or []


def cgroup_attach(path: str, attach_type: str, prog_pin: str) -> None:
    run("cgroup", "attach", path, attach_type, "pinned", prog_pin, "multi", json_output=False)


def cgroup_detach(path: str, attach_type: str, prog_id: int) -> None:
    run("cgroup", "detach", path, attach_type, "id", str(prog_id), json_output=False)


def update_command(pin: str, key: str, value: str) -> str:
    return f"map update pinned {pin} key hex {key} value hex {value}"


def delete_command(pin: str, key: str) -> str:
    return f"map delete pinned {pin} key hex {key}"
