"""The agent's spool: numbered, durable across restarts, capped with a counted drop, and
never mistaken about what the dashboard already holds."""

import sqlite3

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


def test_the_cap_counts_the_calls_its_dropped_rows_stood_for(tmp_path):
    """A row folded in the kernel stands for many calls: dropping it loses all of them (issue 16)."""
    spool = Spool(str(tmp_path / "s.db"), cap=2)
    spool.append([{"n": 0, "count": 40}, {"n": 1}, {"n": 2, "count": 7}])
    assert spool.depth == 2 and spool.dropped == 40
    spool.append([{"n": 3}])
    assert spool.dropped == 41 and [e["n"] for e in spool.read(0, 10)] == [2, 3]


def test_a_spool_written_by_an_older_agent_is_read_and_counted(tmp_path):
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('next_seq', 3), ('dropped', 0), ('fresh', 0);"
        "INSERT INTO events VALUES (1, '{\"n\": 0}'), (2, '{\"n\": 1}');"
    )
    old.commit()
    old.close()
    spool = Spool(path, cap=2)
    spool.append([{"n": 2, "count": 5}])
    assert spool.dropped == 1 and [e["n"] for e in spool.read(0, 10)] == [1, 2]


def test_the_depth_stays_exact_through_acks_caps_and_a_renumbering_welcome():
    spool = Spool(cap=50)
    spool.append([{"n": i} for i in range(30)])
    assert spool.depth == 30
    spool.ack(10)
    assert spool.depth == 20
    spool.append([{"n": i, "count": 2} for i in range(40)])  # 60 waiting: the 10 oldest go
    assert spool.depth == 50 and spool.dropped == 10
    spool.welcome(1000)  # a fresh spool's rows are renumbered after what the dashboard has
    assert spool.depth == 50 and [e["seq"] for e in spool.read(0, 2)] == [1001, 1002]
    spool.ack(spool.last_seq)
    assert spool.depth == 0
