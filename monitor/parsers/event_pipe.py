"""Decoding of `bpftool -j map event_pipe`: the programs' calls (`events`) and the
container lifecycle records (`lifecycle`).

bpftool writes one JSON array of records and closes each record's brace only when the
next record starts, so waiting for whole objects would hold every event back until the
next one. `items` emits a record as soon as its `data` (or `lost`) member is complete,
reading the stream with ijson's event parser.
"""

from __future__ import annotations

import ijson

from ..kernel.layout import decode_event, decode_lifecycle, decode_proc
from .bpftrace import LineError, Signal


async def items(stream):
    """Records from an asyncio stream, each as soon as its payload has arrived."""
    builder = None
    async for prefix, event, value in ijson.parse_async(stream, use_float=True):
        if prefix == "item" and event == "start_map":
            builder = ijson.ObjectBuilder()
        if builder is None:
            continue  # the array itself, or the late closing brace of a record already sent
        builder.event(event, value)
        if (prefix == "item.data" and event == "end_array") or (prefix == "item.lost" and event == "end_map"):
            yield builder.value
            builder = None


def parse(record, decode=decode_event) -> dict | Signal:
    """One call the programs sent, or a Signal for the kernel's lost-sample records.

    Those are `overflow`, not `lost`: a full buffer makes bpf_perf_event_output fail, and
    the programs then count the call with its flow (or in their `lost` map) themselves, so
    counting the kernel's record as lost too would count each such call twice."""
    if not isinstance(record, dict):
        raise LineError("record is not an object")
    if "lost" in record:
        lost = record["lost"]
        count = lost.get("count") if isinstance(lost, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LineError("lost record without a count")
        return Signal("overflow", count, record)
    data = record.get("data")
    if not isinstance(data, list):
        raise LineError("record without data")
    try:
        return decode(bytes(data))
    except (ValueError, TypeError) as exc:
        raise LineError(f"bad kernel event: {exc}") from None


def parse_lifecycle(record) -> dict | Signal:
    """A container cgroup the kernel classified at mkdir, or a process it held at exec.
    A lost record costs no hold: the program holds only what it could report."""
    return parse(record, decode_lifecycle)


def parse_proc(record) -> dict | Signal:
    """An exec or exit in a monitored cgroup. A record the kernel could not send is counted
    by the program (`proc_lost`), so the kernel's lost-sample record is only `overflow`."""
    return parse(record, decode_proc)
