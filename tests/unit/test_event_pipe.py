"""Replay of real `bpftool -j map event_pipe` output (recorded on this kernel by
tests/fixtures/record_event_pipe.py: two denied connects, one let through, one denied UDP
sendto, and the container lifecycle records): each record is decoded as soon as its data
is complete, not when the next one starts."""

import asyncio
from pathlib import Path

import pytest

from monitor.parsers import event_pipe
from monitor.parsers.bpftrace import LineError, Signal

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECORDED = (FIXTURES / "enforce.event_pipe.json").read_bytes()
LIFECYCLE = (FIXTURES / "lifecycle.event_pipe.json").read_bytes()


async def records_from(chunks, settle=0.05):
    stream = asyncio.StreamReader()
    got = []

    async def consume():
        async for record in event_pipe.items(stream):
            got.append(record)

    task = asyncio.create_task(consume())
    seen_after_chunk = []
    for chunk in chunks:
        stream.feed_data(chunk)
        await asyncio.sleep(settle)
        seen_after_chunk.append(len(got))
    stream.feed_eof()
    await task
    return got, seen_after_chunk


async def test_recorded_calls_decode_field_by_field():
    got, _ = await records_from([RECORDED])
    events = [event_pipe.parse(r) for r in got]
    assert len(events) == 4
    first, second, allowed, datagram = events
    assert {e["op"] for e in (first, second, allowed)} == {"connect"}
    assert (datagram["op"], datagram["dest_ip"], datagram["dest_port"]) == ("sendmsg", "127.10.10.5", 53)
    assert (datagram["kernel_verdict"], datagram["rule_id"]) == ("deny", "r")
    assert (first["dest_ip"], first["dest_port"], first["family"]) == ("127.10.10.5", 80, 4)
    assert (first["comm"], first["rule_id"], first["kernel_verdict"], first["slot"]) == ("python", "r", "deny", 1)
    assert first["pid"] == first["tid"] > 0 and first["pid"] != second["pid"]  # one process per connect
    assert first["mono_ns"] < second["mono_ns"] < allowed["mono_ns"] and first["folded"] == 0
    assert (allowed["dest_ip"], allowed["dest_port"], allowed["kernel_verdict"]) == ("127.0.0.1", 9, "allow")
    assert (allowed["rule_id"], allowed["slot"], allowed["uid"], allowed["gid"]) == ("", 0, 0, 0)


async def test_a_record_is_emitted_before_the_next_one_starts():
    cut = RECORDED.index(b"]", RECORDED.index(b'"data"')) + 1  # end of the first data array, no brace yet
    _, seen = await records_from([RECORDED[:cut], RECORDED[cut:]])
    assert seen == [1, 4]


async def test_recorded_lifecycle_records_decode():
    got, _ = await records_from([LIFECYCLE])
    new, *held = [event_pipe.parse_lifecycle(r) for r in got]
    assert new["type"] == "new" and new["cgroup_id"] > 0 and new["parent_id"] > 0 and new["pid"] == 0
    assert held and all(h["type"] == "held" and h["cgroup_id"] == new["cgroup_id"] and h["pid"] > 0 for h in held)
    assert new["mono_ns"] < held[0]["mono_ns"]
    with pytest.raises(LineError):
        event_pipe.parse_lifecycle({"data": [0] * 36})  # type 0 is no lifecycle record


def test_lost_records_are_signals_and_garbage_is_refused():
    lost = event_pipe.parse({"type": 2, "cpu": 0, "index": 0, "lost": {"id": 7, "count": 12}})
    assert lost == Signal("overflow", 12, {"type": 2, "cpu": 0, "index": 0, "lost": {"id": 7, "count": 12}})
    for bad in ([1, 2], {"type": 9}, {"data": [1, 2, 3]}, {"data": [300] * 152}, {"lost": {"count": -1}}):
        with pytest.raises(LineError):
            event_pipe.parse(bad)
    bad_family = bytearray(152)
    bad_family[46] = 9
    with pytest.raises(LineError, match="family"):
        event_pipe.parse({"data": list(bad_family)})
    bad_verdict = bytearray(152)
    bad_verdict[46], bad_verdict[47] = 4, 7
    with pytest.raises(LineError, match="verdict"):
        event_pipe.parse({"data": list(bad_verdict)})
    bad_op = bytearray(152)
    bad_op[46], bad_op[144] = 4, 5
    with pytest.raises(LineError, match="op"):
        event_pipe.parse({"data": list(bad_op)})
