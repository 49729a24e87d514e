"""The probe on this machine's real kernel: everything the product uses is there."""

import pytest

from monitor import features

pytestmark = pytest.mark.kernel


def test_this_kernel_offers_tracing_and_enforcement(kernel):
    report = features.probe()
    assert report["features"]["btf"] and report["features"]["cgroup_connect_hooks"]
    assert features.missing_for_enforcement(report) == [] and features.missing_for_tracing(report) == []
    assert report["tools"]["bpftool"].count(".") == 2 and report["tools"]["bpftrace"]
