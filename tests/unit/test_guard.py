"""monitor/guard.py on real files: a protected file is made immutable (a truncate, a rename
over it, a chmod are refused by the kernel) and given back as it was when its rule goes; an
attribute someone else set stays; a symbolic link cannot lead the agent out of the root it
looks in; and a refused call's names are told apart by the file they reach."""

import os
import time

import pytest

from monitor import guard

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setting the immutable attribute needs root")


@pytest.fixture
def files(tmp_path):
    made = []
    yield tmp_path, made
    for path in made:  # whatever happened, nothing stays immutable
        fd = os.open(path, os.O_RDONLY)
        try:
            guard._set_flags(fd, guard._flags(fd) & ~guard.FS_IMMUTABLE_FL)
        finally:
            os.close(fd)


def test_a_protected_file_refuses_every_change_until_its_rule_goes(files, tmp_path):
    root, made = files
    target, other = root / "protected", root / "other"
    target.write_text("original")
    other.write_text("x")
    made.append(target)
    state = tmp_path / "state.json"
    g = guard.Guard(str(state))
    g.apply({(7, str(target))}, {7: os.getpid()})
    assert g.guarded() == {guard.identity(os.getpid(), str(target)): (7, str(target))}
    for attempt in (lambda: os.truncate(target, 0), lambda: os.rename(other, target), lambda: os.chmod(target, 0o600),
                    lambda: open(target, "w")):  # fmt: skip
        with pytest.raises(PermissionError):
            attempt()
    assert target.read_text() == "original"
    assert guard.Guard(str(state)).held == g.held  # a restarted agent knows what it set
    g.apply(set(), {7: os.getpid()})  # the rule is gone
    target.write_text("changed")
    assert target.read_text() == "changed" and not g.held


def test_an_attribute_set_by_someone_else_is_left_as_it_was(files):
    root, made = files
    target = root / "theirs"
    target.write_text("x")
    made.append(target)
    fd = os.open(target, os.O_RDONLY)
    guard._set_flags(fd, guard._flags(fd) | guard.FS_IMMUTABLE_FL)
    os.close(fd)
    g = guard.Guard()
    g.apply({(7, str(target))}, {7: os.getpid()})
    g.apply(set(), {7: os.getpid()})
    with pytest.raises(PermissionError):
        os.truncate(target, 0)  # still theirs


def test_names_are_looked_up_inside_the_root_and_a_refusal_is_told_by_its_file(files, tmp_path):
    root, made = files
    target = root / "protected"
    target.write_text("x")
    made.append(target)
    (root / "link").symlink_to(target)
    g = guard.Guard()
    g.apply({(7, str(target))}, {7: os.getpid()})
    held = g.guarded()
    me = os.getpid()
    assert guard.refused_file(me, [str(root / "link"), ""], guard.AT_FDCWD, held, None) == str(target)
    assert guard.refused_file(me, ["/nonexistent", str(root / "./protected")], guard.AT_FDCWD, held, None)
    assert guard.refused_file(me, [str(tmp_path)], guard.AT_FDCWD, held, None) is None


def test_a_link_in_a_container_cannot_lead_the_agent_to_a_host_file(tmp_path):
    """An absolute link is resolved inside the root of the process looked through (a chrooted
    child here, as a container's process): /etc/hostname there is not the host's."""
    (tmp_path / "escape").symlink_to("/etc/hostname")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("inside")
    ready, told = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only waits in its new root
        try:
            os.chroot(tmp_path)
            os.write(told, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    os.read(ready, 1)
    try:
        inside = guard.identity(child, "/escape")
        assert inside == guard.identity(os.getpid(), str(tmp_path / "etc" / "hostname"))
        assert inside != guard.identity(os.getpid(), "/etc/hostname")
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
