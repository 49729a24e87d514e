"""The tracer's cumulative in-kernel counts become events with a count: each counter's growth,
once, with the flow's last printed call as its template; a restart starts from zero."""

import pytest

from monitor.flowcounts import FlowCounts, KernelFlows
from monitor.parsers.bpftrace import LineError, Signal, decode

# as bpftrace 0.17 prints it (key: cgroup, s_addr as a little-endian u32, port, ret)
MAP_LINE = '{"type": "map", "data": {"@folded": {"1,16777343,9,-111": 20, "7,84544127,443,0": 3}}}'
PRINTED = {"pid": 42, "tid": 42, "uid": 0, "gid": 0, "comm": "curl", "cgroup_id": 7, "family": 4,
           "dest_ip": "127.10.10.5", "dest_port": 443, "result": 0, "mono_ns": 1, "verdict": "allow"}  # fmt: skip


def test_map_lines_are_signals_carrying_the_maps():
    sig = decode(MAP_LINE)
    assert isinstance(sig, Signal) and sig.kind == "map" and sig.raw["@folded"]["7,84544127,443,0"] == 3


def test_growth_becomes_one_event_per_flow_with_the_printed_call_as_template():
    flows = FlowCounts()
    flows.note(PRINTED)
    first = {(e["dest_ip"], e["dest_port"]): e for e in flows.dump(decode(MAP_LINE).raw)}
    assert first[("127.10.10.5", 443)]["count"] == 3 and first[("127.10.10.5", 443)]["comm"] == "curl"
    assert first[("127.0.0.1", 9)]["count"] == 20 and first[("127.0.0.1", 9)]["pid"] == 0  # no template
    again = flows.dump({"@folded": {"7,84544127,443,0": 5, "1,16777343,9,-111": 20}})
    assert [(e["dest_ip"], e["count"]) for e in again] == [("127.10.10.5", 2)]
    flows.restart()  # a new tracer: its counters start again from zero
    assert [e["count"] for e in flows.dump({"@folded": {"7,84544127,443,0": 4}})] == [4]


def test_a_counter_that_shrank_is_taken_whole():
    flows = FlowCounts()
    flows.dump({"@folded": {"7,84544127,443,0": 10}})
    assert [e["count"] for e in flows.dump({"@folded": {"7,84544127,443,0": 2}})] == [2]


def test_a_map_that_is_not_a_map_is_refused():
    with pytest.raises(LineError):
        FlowCounts().dump({"@folded": []})


@pytest.mark.parametrize("bad", [("x,y", 1), ("1,2,3", 1), ("1,2,3,4", -1), ("1,2,3,4", "7"), ("1,2,3,4", True)])
def test_a_garbage_entry_is_counted_and_the_others_still_go_out_once(bad):
    """A bad entry between good ones used to raise after the good ones' totals had moved
    on: their counts were never reported (issue 16)."""
    flows = FlowCounts()
    maps = {"@folded": {"7,84544127,443,0": 3, bad[0]: bad[1], "1,16777343,9,-111": 20}}
    assert sorted(e["count"] for e in flows.dump(maps)) == [3, 20] and flows.bad == 1
    assert flows.dump(maps) == [] and flows.bad == 2  # nothing twice


def kernel_call(folded: int, pid: int = 42, verdict: str = "allow") -> dict:
    """A call as monitor.kernel.layout.decode_event gives it."""
    return {"mono_ns": 1, "cgroup_id": 7, "folded": folded, "pid": pid, "tid": pid, "uid": 0, "gid": 0,
            "slot": 0, "dest_ip": "127.8.8.8", "dest_port": 443, "family": 4, "kernel_verdict": verdict,
            "op": "connect", "comm": "curl", "rule_id": ""}  # fmt: skip


def test_kernel_flow_counters_become_counted_events_once():
    flows = KernelFlows()
    assert flows.sent(kernel_call(0)) == 0
    call = kernel_call(5, pid=43)
    assert flows.sent(call) == 5 and "folded" not in call  # the agent adds them to this call's count
    assert flows.sent(kernel_call(3)) == 0  # an older reading from another CPU's buffer
    key = (7, 0, 443, "127.8.8.8", "allow", "connect", 0)
    [quiet] = flows.dump([(b"raw", key, 0, 9)])  # the flow went quiet: the dump tells, like its last call
    assert (quiet["count"], quiet["pid"], quiet["comm"], quiet["kernel_verdict"]) == (4, 42, "curl", "allow")
    assert flows.dump([(b"raw", key, 0, 9)]) == []
    flows.forget([key])  # pruned from the kernel table: a new entry counts from zero
    assert [e["count"] for e in flows.dump([(b"raw", key, 0, 2)])] == [2]


def test_kernel_counts_present_at_start_are_not_new_and_unknown_flows_get_a_template():
    flows = KernelFlows()
    key = (9, 3, 80, "::1", "deny", "sendmsg", 0)
    flows.resume([(b"raw", key, 0, 10)], None, "gen-a")
    (event,) = flows.dump([(b"raw", key, 0, 12)])
    assert (event["count"], event["family"], event["slot"], event["kernel_verdict"], event["pid"]) == (
        2,
        6,
        3,
        "deny",
        0,
    )
    assert event["op"] == "sendmsg"  # a counted datagram flow stays a datagram flow


def test_counts_made_while_no_agent_ran_are_reported_after_a_restart(tmp_path):
    state = str(tmp_path / "flows.json")
    key = (9, 0, 80, "127.8.8.8", "allow", "connect", 0)
    before = KernelFlows()
    before.resume([], state, "gen-a")
    assert [e["count"] for e in before.dump([(b"raw", key, 0, 10)])] == [10]
    before.save(state, "gen-a")
    after = KernelFlows()  # restarted; meanwhile the kernel counted 5 more
    new_key = (9, 0, 81, "127.8.8.8", "allow", "connect", 0)  # a flow first counted while no agent ran
    after.resume([(b"raw", key, 0, 15), (b"raw", new_key, 0, 3)], state, "gen-a")
    assert [e["count"] for e in after.dump([(b"raw", key, 0, 15), (b"raw", new_key, 0, 3)])] == [5, 3]
    other = KernelFlows()  # a new program generation: its counters are not the saved ones
    other.resume([(b"raw", key, 0, 15)], state, "gen-b")
    assert other.dump([(b"raw", key, 0, 15)]) == []
    (tmp_path / "flows.json").write_text("{not json")
    broken = KernelFlows()
    broken.resume([(b"raw", key, 0, 15)], state, "gen-a")
    assert broken.dump([(b"raw", key, 0, 15)]) == []


def test_kernel_flows_gone_from_the_table_are_forgotten():
    """Templates and totals of flows no longer in the kernel's table used to stay forever."""
    flows = KernelFlows()
    gone, kept = (7, 0, 80, "127.8.8.8", "allow", "connect", 0), (7, 0, 81, "127.8.8.8", "allow", "connect", 0)
    flows.sent(kernel_call(0) | {"dest_port": 80})
    flows.dump([(b"a", gone, 0, 4), (b"b", kept, 0, 1)])
    assert gone in flows.templates and gone in flows.totals
    assert [e["count"] for e in flows.dump([(b"b", kept, 0, 3)])] == [2]
    assert gone not in flows.templates and gone not in flows.totals and kept in flows.totals


def test_tracer_templates_are_bounded(monkeypatch):
    monkeypatch.setattr("monitor.flowcounts.MAX_TEMPLATES", 3)
    flows = FlowCounts()
    for port in range(10):
        flows.note(PRINTED | {"dest_port": port})
    assert [key[2] for key in flows.templates] == [7, 8, 9]  # the newest flows keep theirs
