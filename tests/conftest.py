"""Shared fixtures. Kernel tests need root, bpftrace and the cgroup2/tracefs mounts:
without them they skip on a developer's machine and fail under CI=true."""

import glob
import os
import shutil
import uuid

import pytest

from monitor.cgroups import cgroup2_mount
from monitor.kernel.enforcer import OBJECT as ENFORCE_OBJECT


def _kernel_problem() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root"
    for tool in ("bpftrace", "bpftool", "stdbuf"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make setup)"
    if not os.path.isdir("/sys/kernel/tracing/events/syscalls"):
        return "tracefs is not mounted at /sys/kernel/tracing (make mounts)"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs is not mounted at /sys/fs/bpf (make mounts)"
    if not ENFORCE_OBJECT.exists():
        return f"{ENFORCE_OBJECT} is not built (make bpf)"
    try:
        cgroup2_mount()
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def kernel():
    """Use in every test that touches the real kernel."""
    problem = _kernel_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"kernel test cannot run in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
def cgroup_parent():
    """A parent cgroup name of this test's own (never the root)."""
    return f"crossedge-test-{uuid.uuid4().hex[:8]}.slice"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("staff", "", "pw-staff-123")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole run: no test cgroup and no test pin may remain."""
    yield
    try:
        mount = cgroup2_mount()
    except RuntimeError:
        return
    left = glob.glob("/sys/fs/bpf/crossedge-test-*") + glob.glob(os.path.join(mount, "crossedge-test-*"))
    assert not left, f"tests left these behind: {left}"


def pytest_collection_modifyitems(config, items):
    """Browser tests last: Playwright's sync API keeps an event loop running in this thread
    for the rest of the session, which asyncio tests cannot share."""
    items.sort(key=lambda item: "tests/e2e/" in item.nodeid.replace("\\", "/"))
