"""The connect parser on recorded real bpftrace output, and on lines that are not."""

from pathlib import Path

import pytest

from monitor.backends import BACKENDS
from monitor.parsers import connect
from monitor.parsers.bpftrace import LineError
from monitor.supervisor import Supervisor

RECORDED = Path(__file__).parent.parent / "fixtures" / "connect.bpftrace.jsonl"


def replay(lines):
    events = []
    sup = Supervisor(BACKENDS["connect"], lambda _name, ev: events.append(ev))
    for line in lines:
        sup.handle_line(line)
    return sup.health, events


def test_recorded_output_parses():
    health, events = replay(RECORDED.read_bytes().splitlines(keepends=True))
    assert health.attached_probes == 3 and health.bad_lines == 0
    assert [(e["family"], e["dest_ip"], e["dest_port"], e["result"]) for e in events] == [
        (4, "127.10.10.5", 443, -111),
        (6, "::1", 9, -111),
        (6, "::ffff:127.0.0.1", 9, -111),
        (4, "127.0.0.1", 9, -115),
        (4, "127.8.8.8", 80, -111),
    ]
    assert events[0]["comm"] == "python3" and events[0]["pid"] == 4230 and events[0]["cgroup_id"] == 1
    assert events[-1]["comm"] == 'ev"il <b>x y'  # the process chose this name: kept whole, as text


GARBAGE = [
    b"not json at all\n",
    b'{"type": "printf", "data": "connect 1 2 3 4 5 6 2 127.0.0.1 80 0 co',  # truncated JSON
    b'{"type": "printf", "data": "connect 1 2 3 4 5 6 2 127.0.0.1 80 0 comm"}\n',  # record cut short
    b'{"type": "printf", "data": "connect 1 2 3\\n"}\n',
    b'{"type": "printf", "data": "connect x 2 3 4 5 6 2 127.0.0.1 80 0 comm\\n"}\n',
    b'{"type": "printf", "data": "connect 1 2 3 4 5 6 2 ::1 80 0 comm\\n"}\n',  # v6 address, v4 family
    b'{"type": "printf", "data": "connect 1 2 3 4 5 6 7 127.0.0.1 80 0 comm\\n"}\n',  # unknown family
    b'{"type": "printf", "data": "connect 1 2 3 4 5 6 2 127.0.0.1 70000 0 comm\\n"}\n',
    b'{"type": "printf", "data": 42}\n',
    b'{"type": "lost_events", "data": {"events": "many"}}\n',
    b"[1, 2]\n",
    b"\xff\xfe\n",
]


def test_garbage_is_skipped_and_counted_never_fatal():
    good = RECORDED.read_bytes().splitlines(keepends=True)
    health, events = replay(GARBAGE + good + GARBAGE)
    assert len(events) == 5
    assert health.bad_lines == 2 * len(GARBAGE)


def test_lost_event_reports_are_counted_not_events():
    health, events = replay([b'{"type": "lost_events", "data": {"events": 17}}\n'] * 2)
    assert events == [] and health.lost_events == 34


def test_comm_with_spaces_is_kept_whole():
    event = connect.parse("connect 5 1 1 0 0 9 2 127.0.0.1 80 0 a b  c\n")
    assert event["comm"] == "a b  c"


def test_parse_rejects_missing_newline():
    with pytest.raises(LineError):
        connect.parse("connect 5 1 1 0 0 9 2 127.0.0.1 80 0 comm")
