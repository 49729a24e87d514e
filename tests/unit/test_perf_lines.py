"""Replay of real perf_reader output (recorded on this kernel by tests/fixtures/record_perf.py:
two denied connects, one let through, one denied UDP sendto, the container lifecycle
records, and every exec and exit of those processes, /bin/false killed at exec). An exec's
binary is the file that ran, the name it was run by comes with it."""

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.backends import PERF_READER
from monitor.kernel.layout import EVENT, PROC_HEAD, fnv1a
from monitor.parsers import perf_lines
from monitor.parsers.bpftrace import LineError, Signal
from tests.fixtures.record_perf import FALSE, FILES

FIXTURES = Path(__file__).parents[1] / "fixtures"


def replay(name, parse):
    lines = (FIXTURES / f"{name}.perf").read_bytes().splitlines()
    assert lines[0] == b"ready" and parse(lines[0]) == Signal("attached", 1, b"ready")
    return [parse(line) for line in lines[1:]]


def test_recorded_calls_decode_field_by_field():
    events = replay("events", perf_lines.parse)
    assert len(events) == 4
    first, second, allowed, datagram = events
    assert {e["op"] for e in (first, second, allowed)} == {"connect"}
    assert (datagram["op"], datagram["dest_ip"], datagram["dest_port"]) == ("sendmsg", "127.10.10.5", 53)
    assert (datagram["kernel_verdict"], datagram["rule_id"]) == ("deny", "r")
    assert (first["dest_ip"], first["dest_port"], first["family"]) == ("127.10.10.5", 80, 4)
    assert (first["comm"], first["rule_id"], first["kernel_verdict"]) == ("python", "r", "deny")
    assert first["pid"] == first["tid"] > 0 and first["pid"] != second["pid"]  # one process per connect
    assert first["mono_ns"] < second["mono_ns"] < allowed["mono_ns"] and first["folded"] == 0
    assert (allowed["dest_ip"], allowed["dest_port"], allowed["kernel_verdict"]) == ("127.0.0.1", 9, "allow")
    assert (allowed["rule_id"], allowed["slot"], allowed["uid"], allowed["gid"]) == ("", 0, 0, 0)


def test_recorded_lifecycle_records_decode():
    (new,) = replay("lifecycle", perf_lines.parse_lifecycle)  # held execs say so in their own record
    assert new["type"] == "new" and new["cgroup_id"] > 0 and new["parent_id"] > 0
    procs = replay("procs", perf_lines.parse_proc)
    assert new["mono_ns"] < procs[0]["mono_ns"] and procs[0]["cgroup_id"] == new["cgroup_id"]
    for kind in (0, 2):  # 0 is no lifecycle record; 2 was the held record, now part of the exec's
        with pytest.raises(LineError, match="type"):
            perf_lines.parse_lifecycle(b"0 " + (bytes(24) + bytes([kind]) + bytes(7)).hex().encode())


def test_recorded_execs_and_exits_decode():
    records = replay("procs", perf_lines.parse_proc)
    execs = [r for r in records if r["event"] == "exec"]
    exits = {r["pid"]: r for r in records if r["event"] == "exit"}
    assert len(execs) == len(exits) == 6 and {e["pid"] for e in execs} == set(exits)
    python = execs[0]
    # the recording's interpreter: its paths are the recording machine's, their shape is not
    assert python["given"].endswith("/.venv/bin/python") and python["args"][:2] == [python["given"], "-c"]
    assert python["binary"].startswith("/usr/bin/python3") and python["comm"] == "python"
    assert python["kernel_verdict"] == "allow" and python["exit_code"] is None and python["cut"] is False
    # no agent lists the recording's container: every exec there is held, but one killed at exec;
    # the first, its first in its mount namespace, waits for the rules' files to be looked up too
    assert [e["held"] for e in execs] == [True] * 5 + [False]
    assert [e["files_due"] for e in execs] == [True] + [False] * 5
    assert not any(r["held"] for r in records if r["event"] == "exit")
    killed = execs[-1]
    assert (killed["binary"], killed["given"], killed["kernel_verdict"]) == (FALSE, "/bin/false", "deny")
    assert killed["slot"] > 0 and exits[killed["pid"]]["exit_code"] == 9  # SIGKILL at exec
    assert exits[python["pid"]]["exit_code"] == 0 and exits[python["pid"]]["lifetime_ns"] > 0
    assert all(e["start_ns"] == exits[e["pid"]]["start_ns"] and e["ppid"] > 0 for e in execs)


def test_recorded_opens_decode_with_access_result_and_verdict():
    records = replay("procs", perf_lines.parse_proc)
    opens = [r for r in records if r["event"] == "open"]
    assert [(o["path"], o["access"], o["kernel_verdict"]) for o in opens] == [
        (f"{FILES}/key", ["read"], "allow"), (f"{FILES}/missing", ["read"], "allow"),
        (f"{FILES}/forbidden", ["read"], "deny"),
    ]  # fmt: skip
    key, missing, forbidden = opens
    assert key["result"] >= 3 and missing["result"] == -2 and forbidden["slot"] > 0  # an fd, ENOENT, the rule
    assert (key["how"], missing["how"]) == ("", "as_given")  # a failed open has no file: the name it gave
    assert len({o["pid"] for o in opens}) == 1 and key["comm"] == "python" and "binary" not in key  # the agent's
    exits = {r["pid"]: r for r in records if r["event"] == "exit"}
    assert exits[key["pid"]]["exit_code"] == 9  # killed at the forbidden open
    assert key["group"] == (key["cgroup_id"], fnv1a(f"{FILES}/key".encode() + b"\0"), 1, 3, 0)  # as the kernel keys it
    assert missing["group"][4] == -2  # a failure is its own group


def test_lost_counts_are_signals_and_garbage_is_refused():
    assert perf_lines.parse(b"lost 1 12\n") == Signal("overflow", 12, b"lost 1 12\n")
    for bad in (b"lost 1\n", b"hello\n", b"0 zz\n", b"0 " + b"00" * 10 + b"\n", b"ready now\n"):
        with pytest.raises(LineError):
            perf_lines.parse(bad)
    bad_family = bytearray(EVENT.size)
    bad_family[46] = 9
    with pytest.raises(LineError, match="family"):
        perf_lines.parse(b"0 " + bad_family.hex().encode())
    short_proc = bytearray(PROC_HEAD.size)
    short_proc[40] = 1  # an exec that says it carries a path of 200 bytes, and carries none
    short_proc[68] = 200
    with pytest.raises(LineError, match="path, argv and name"):
        perf_lines.parse_proc(b"0 " + short_proc.hex().encode())


def test_the_reader_says_why_it_cannot_open_a_map():
    done = subprocess.run([sys.executable, str(PERF_READER), "/sys/fs/bpf/no-such-map"], capture_output=True, text=True)
    assert done.returncode == 1 and "cannot open /sys/fs/bpf/no-such-map" in done.stderr
