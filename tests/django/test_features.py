"""The kernel feature probe: reported in hello, shown as a matrix, reduced to known values,
and a kernel that offers nothing usable is a clear error, not a crash loop."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import CommandError, call_command

from dashboard.asgi import application
from dashboard.fleet.models import Node
from monitor import features

PROBE = {
    "kernel": "5.10.0-edge",
    "tools": {"bpftool": "7.1.0", "bpftrace": "0.17.0", "evil": "<b>x</b>"},
    "features": {"btf": True, "cgroup_connect_hooks": False, "ring_buffer": "yes", "made_up": True},
}


@pytest.mark.django_db(transaction=True)
async def test_hello_features_are_stored_reduced_to_known_values(node):
    ws = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {node.token}".encode())])
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "hello", "v": 1, "node": {"hostname": "h", "features": PROBE}})
    await ws.receive_json_from(timeout=5)
    await ws.disconnect()
    saved = await database_sync_to_async(Node.objects.get)(pk=node.pk)
    assert saved.features == {
        "features": {"btf": True, "cgroup_connect_hooks": False},
        "tools": {"bpftool": "7.1.0", "bpftrace": "0.17.0"},
    }


@pytest.mark.django_db
def test_nodes_page_shows_the_feature_matrix_and_degradations(client, staff, node):
    node.features = {"features": {"btf": True, "cgroup_connect_hooks": False}, "tools": {"bpftool": "7.1.0"}}
    node.health = {"degraded": ["no kernel enforcement (deny rules only reported): missing cgroup_connect_hooks"]}
    node.save()
    client.force_login(staff)
    page = client.get("/nodes/").content.decode()
    assert "Kernel features" in page and "cgroup connect hooks" in page
    assert '<span class="no">no</span>' in page and '<span class="yes">yes</span>' in page and "7.1.0" in page
    assert "missing cgroup_connect_hooks" in page


def test_what_enforcement_and_tracing_need():
    report = {"tools": {"bpftrace": ""}, "features": {"btf": True, "cgroup2": True, "lpm_trie": True}}
    assert features.missing_for_enforcement(report) == ["cgroup_connect_hooks", "perf_event_array", "percpu_hash"]
    assert features.missing_for_tracing(report) == ["bpftrace", "tracepoint_connect"]


@pytest.mark.django_db
def test_a_kernel_with_nothing_usable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(features, "probe", lambda: {"kernel": "x", "tools": {}, "features": {}})
    with pytest.raises(CommandError, match="neither connection tracing nor enforcement"):
        call_command("runagent", "--token", "t")
