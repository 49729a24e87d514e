"""The agent's cgroup id -> path lookup on the real cgroup2 tree: an unknown id is opened
as a kernfs handle, so a storm of new containers costs one syscall each, never a walk of
the whole tree on the agent's event loop."""

import os

import pytest

from monitor.cgroups import CgroupIndex, cgroup2_mount, cgroup_id

pytestmark = pytest.mark.kernel


@pytest.fixture
def tree(kernel, cgroup_parent):
    root = cgroup2_mount()
    parent = os.path.join(root, cgroup_parent)
    made = [parent]
    os.mkdir(parent)
    try:
        yield root, parent, made
    finally:
        for path in reversed(made):
            if os.path.isdir(path):
                os.rmdir(path)


def test_new_cgroups_are_found_by_handle_without_a_walk(tree):
    root, parent, made = tree
    index = CgroupIndex(root)
    try:
        assert index.path(cgroup_id(root)) == "/"
        for i in range(200):  # new containers keep coming: each found at its first event
            path = os.path.join(parent, f"docker-{i:064x}.scope")
            os.mkdir(path)
            made.append(path)
            assert index.path(cgroup_id(path)) == "/" + os.path.relpath(path, root)
        assert index.path(2**62 + 12345) is None  # no such cgroup
        assert index.scans == 0 and index.handle_lookups >= 201
    finally:
        index.close()


def test_a_removed_cgroup_keeps_the_path_it_was_seen_with(tree):
    root, parent, made = tree
    index = CgroupIndex(root, rescan_interval=0)
    try:
        path = os.path.join(parent, "libpod-" + "ab" * 32)
        os.mkdir(path)
        made.append(path)
        cgid = cgroup_id(path)
        assert index.path(cgid) == "/" + os.path.relpath(path, root) and index.alive(cgid)
        os.rmdir(path)
        assert not index.alive(cgid)  # `--rm`: its events arrive after it is gone
        index.rescan()
        assert index.path(cgid) == "/" + os.path.relpath(path, root)
        fresh = CgroupIndex(root, rescan_interval=0)  # never saw it: gone is unknown, not an error
        assert fresh.path(cgid) is None
        fresh.close()
    finally:
        index.close()
