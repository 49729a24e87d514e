"""The node's file watches (CROSSEDGE_FILE_WATCH) and the agent's memory of which binary a
process runs, which file events need for their opener."""

import pytest

from monitor.files import DEFAULT_WATCHES, Watch, WatchError, parse_watches, watched
from monitor.processes import ProcessTable


def test_defaults_cover_the_usual_suspects_and_nothing_ordinary():
    assert parse_watches(None) == parse_watches("  ") == DEFAULT_WATCHES
    for path, access in [("/etc/shadow", ["read"]), ("/etc/passwd", ["write"]), ("/root/.ssh/id_rsa", ["read"]),
                         ("/home/ann/.ssh/authorized_keys", ["write", "create"]), ("/run/docker.sock", ["read"]),
                         ("/proc/1/mem", ["read"]), ("/usr/bin/ls", ["write", "truncate"])]:  # fmt: skip
        assert watched(path, access, DEFAULT_WATCHES), path
    for path, access in [("/etc/passwd", ["read"]), ("/usr/bin/ls", ["read"]), ("/tmp/x", ["write", "create"]),
                         ("/proc/1/status", ["read"]), ("/home/ann/notes", ["read"])]:  # fmt: skip
        assert not watched(path, access, DEFAULT_WATCHES), path


def test_a_node_sets_its_own_watches_or_none():
    assert parse_watches("-") == ()
    assert parse_watches("/srv/keys/* /etc/*:write,create") == (
        Watch("/srv/keys/*"), Watch("/etc/*", ("write", "create"))
    )  # fmt: skip
    with pytest.raises(WatchError, match="unknown access 'exec'"):
        parse_watches("/etc/*:exec")
    with pytest.raises(WatchError, match="absolute path or glob"):
        parse_watches("etc/shadow")


def test_a_folded_execs_pid_is_answered_by_its_parent_and_task_name():
    table = ProcessTable(limit=4)
    table.exec(999_999_990, "/bin/busybox", ppid=5, comm="busybox")
    assert table.binary(999_999_990) == "/bin/busybox"
    assert table.binary(999_999_999, ppid=5, comm="busybox") == "/bin/busybox"  # never heard of: folded
    assert table.binary(999_999_999, ppid=6, comm="busybox") == ""  # another parent's child: not known
    for pid in range(20, 30):
        table.exec(pid, f"/bin/b{pid}", ppid=pid, comm=f"b{pid}")
    assert table.binary(999_999_990) == "" and len(table._by_parent) == 4  # bounded: the oldest forgotten
