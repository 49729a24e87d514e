"""An event from a cgroup nested deeper than the dashboard stores is stored, its path cut
and marked, not refused by the dashboard and then lost with the spool's ack (issue 16)."""

from dashboard.events.schema import check_event
from monitor.agent import MAX_PATH, Agent

CID = "ab" * 32


class DeepIndex:
    root = "/sys/fs/cgroup"

    def __init__(self, path):
        self._path = path

    def path(self, cgid):
        return self._path


def test_a_too_deep_cgroup_path_is_cut_at_its_start_and_the_event_fits_the_schema():
    deep = "/kubepods.slice" + "/nested" * 200 + f"/docker-{CID}.scope"
    agent = Agent(backends=(), cgroups=DeepIndex(deep))
    agent.handle("connect", {"mono_ns": 1, "cgroup_id": 9, "pid": 1, "tid": 1, "uid": 0, "gid": 0, "comm": "sh",
                             "family": 4, "dest_ip": "127.8.8.8", "dest_port": 80, "result": 0})  # fmt: skip
    [event] = agent.outbox
    assert len(event["cgroup_path"]) == MAX_PATH and event["cgroup_path"].startswith("…/")
    assert event["cgroup_path"].endswith(f"/docker-{CID}.scope") and event["container"]["id"] == CID
    check_event(event | {"seq": 1})  # raises if the dashboard would refuse it
