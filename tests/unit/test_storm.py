"""Back-pressure: in an event storm the agent folds allowed connections into per-flow
counts, never violations, and counts what it folded."""

import itertools

from monitor import folding
from monitor.agent import Agent


def event(i, verdict="allow", dest="127.8.8.8"):
    return {"cgroup_id": 7, "dest_ip": dest, "dest_port": 80, "result": 0, "comm": "curl", "pid": 100 + i,
            "tid": 100 + i, "verdict": verdict, "rule_id": "" if verdict == "allow" else "r", "ts_ns": i}  # fmt: skip


def test_a_storm_folds_allowed_events_and_lets_violations_through(monkeypatch):
    agent = Agent(backends=(), aggregate_above=100)
    agent.folder.storm = True
    for i in range(500):
        agent._emit(event(i))
    agent._emit(event(999, verdict="deny"))
    agent._emit(event(1000, dest="127.9.9.9"))
    assert [e["verdict"] for e in agent.outbox] == ["deny"]  # the violation went at once
    agent.flush_folds(force=True)
    folded = {e["dest_ip"]: e for e in list(agent.outbox)[1:]}
    assert folded["127.8.8.8"]["count"] == 500 and folded["127.8.8.8"]["kind"] == "aggregate"
    assert folded["127.8.8.8"]["pid"] == 599 and folded["127.9.9.9"]["count"] == 1
    assert agent.folder.folded == 501 and agent.verdicts["allow"] == 501


def test_storm_mode_starts_above_the_threshold_and_ends_below_half(monkeypatch):
    clock = itertools.count()
    now = [0.0]
    monkeypatch.setattr(folding.time, "monotonic", lambda: now[0])
    agent = Agent(backends=(), aggregate_above=100)

    def second(events):
        """One second of events; the rate of a second is judged at the next second's first event."""
        for _ in range(events):
            agent._emit(event(next(clock)))
        now[0] += 1.0

    second(150)
    second(150)
    assert agent.folder.storm
    second(80)
    second(80)
    assert agent.folder.storm  # 80/s is above half the threshold: still folding
    second(10)
    second(10)
    assert not agent.folder.storm


def proc(i, kind="exec", binary="/bin/true", verdict="allow", exit_code=0):
    e = {"cgroup_id": 7, "kind": kind, "comm": "true", "pid": 200 + i, "tid": 200 + i, "ppid": 9, "start_ns": i,
         "binary": binary if kind == "exec" else "", "parent_binary": "/bin/sh", "verdict": verdict,
         "rule_id": "" if verdict == "allow" else "r", "ts_ns": i}  # fmt: skip
    return e | ({"exit_code": exit_code, "lifetime_ns": 5} if kind == "exit" else {})


def test_a_process_storm_folds_execs_by_binary_and_exits_by_status_never_a_violation():
    agent = Agent(backends=(), aggregate_above=100)
    agent.folder.storm = True
    for i in range(300):
        agent._emit(proc(i))
        agent._emit(proc(i, kind="exit", exit_code=0 if i % 3 else 256))
    agent._emit(proc(999, binary="/tmp/x"))
    agent._emit(proc(1000, binary="/tmp/evil", verdict="deny"))
    assert [(e["binary"], e["verdict"]) for e in agent.outbox] == [("/tmp/evil", "deny")]
    agent.flush_folds(force=True)
    rows = list(agent.outbox)[1:]
    execs = {e["binary"]: e for e in rows if e["kind"] == "exec"}
    exits = {e["exit_code"]: e for e in rows if e["kind"] == "exit"}
    assert (execs["/bin/true"]["count"], execs["/bin/true"]["pid"], execs["/tmp/x"]["count"]) == (300, 499, 1)
    assert (exits[0]["count"], exits[256]["count"]) == (200, 100)
    assert sum(e["count"] for e in rows) == 601  # nothing lost in folding
