"""The agent's spool: numbered, durable across restarts, capped with a counted drop, and
never mistaken about what the dashboard already holds."""

from monitor.spool import Spool


def test_numbers_persist_and_acks_delete(tmp_path):
    path = str(tmp_path / "spool.db")
    spool = Spool(path)
    assert spool.append([{"n": i} for i in range(5)]) == 5
    spool.welcome(0)
    spool.ack(2)
    spool.close()
    again = Spool(path)  # an agent restart
    assert [e["seq"] for e in again.read(0, 10)] == [3, 4, 5] and again.depth == 3
    assert again.append([{"n": 5}]) == 6
    assert [e["n"] for e in again.read(4, 10)] == [4, 5]


def test_a_known_spool_drops_what_the_dashboard_stored(tmp_path):
    spool = Spool(str(tmp_path / "s.db"))
    spool.welcome(0)
    spool.append([{"n": i} for i in range(4)])  # 1..4 sent, 1..3 stored, the ack lost
    spool.welcome(3)
    assert [e["seq"] for e in spool.read(0, 10)] == [4]


def test_a_new_spool_is_renumbered_after_the_dashboards_last(tmp_path):
    spool = Spool(str(tmp_path / "s.db"))  # the node's old spool was lost; the dashboard has 1..1000
    spool.append([{"n": i} for i in range(3)])
    spool.welcome(1000)
    assert [(e["seq"], e["n"]) for e in spool.read(0, 10)] == [(1001, 0), (1002, 1), (1003, 2)]
    assert spool.append([{"n": 3}]) == 1004


def test_the_cap_drops_the_oldest_and_counts_them(tmp_path):
    path = str(tmp_path / "s.db")
    spool = Spool(path, cap=5)
    spool.append([{"n": i} for i in range(4)])
    spool.append([{"n": i} for i in range(4, 8)])
    assert spool.depth == 5 and spool.dropped == 3
    assert [e["n"] for e in spool.read(0, 10)] == [3, 4, 5, 6, 7]
    spool.close()
    assert Spool(path, cap=5).dropped == 3
