"""Traffic in the dashboard: agent records stored once and checked, the billing API's sums
over a window, the traffic page, its CSV, the container page, and retention."""

import csv
import datetime as dt
import io
import time

import pytest

from dashboard.events.ingest import ingest_batch
from dashboard.events.retention import prune
from dashboard.fleet.models import Container
from dashboard.traffic.models import TrafficMinute

from .conftest import agent_event

pytestmark = pytest.mark.django_db
PROD = agent_event()["container"]
PATH = agent_event()["cgroup_path"]
_seq = iter(range(10_000, 20_000))


def traffic(minutes_ago=1, **overrides):
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    record = {"seq": next(_seq), "kind": "traffic", "ts_ns": now - minutes_ago * 60_000_000_000, "cgroup_id": 7519,
              "cgroup_path": PATH, "container": PROD, "family": 4, "proto": "tcp", "local_port": 40000,
              "remote_ip": "127.22.0.1", "remote_port": 443, "bytes_in": 1000, "bytes_out": 5000, "payload_in": 900,
              "payload_out": 4800, "packets_in": 10, "packets_out": 20}  # fmt: skip
    return record | overrides


@pytest.fixture
def stored(node):
    batch = [traffic(), traffic(minutes_ago=2, local_port=40001), traffic(remote_ip="127.22.0.2", bytes_in=7),
             traffic(minutes_ago=3 * 24 * 60)]  # fmt: skip
    result = ingest_batch(node, batch)
    assert not result.rejected and result.stored == 4
    return batch


def test_records_are_stored_once_and_bad_ones_refused(node, stored):
    again = ingest_batch(node, stored[:2])
    assert again.duplicates == 2 and TrafficMinute.objects.count() == 4
    bad = [traffic(remote_ip="::1"), traffic(bytes_in=-1), traffic(remote_ip="nope"), traffic(proto="x" * 20)]
    result = ingest_batch(node, bad)
    reasons = [r["reason"] for r in result.rejected]
    assert len(reasons) == 4 and "family" in reasons[0] and "bytes_in" in reasons[1] and "remote_ip" in reasons[2]
    row = TrafficMinute.objects.get(seq=stored[0]["seq"])
    assert row.container.name == "edge-app-prod" and (row.payload_out, row.remote_port) == (4800, 443)


def test_the_api_sums_per_container_and_per_flow_over_a_window(client, staff, stored):
    client.force_login(staff)
    (total,) = client.get("/api/traffic/").json()["results"]  # the last day: three of the four minutes
    assert (total["container"], total["bytes_in"], total["bytes_out"], total["payload_out"]) == (
        "edge-app-prod", 2007, 15000, 14400)  # fmt: skip
    week = client.get("/api/traffic/", {"period": "week"}).json()["results"][0]
    assert week["bytes_out"] == 20000
    flows = client.get("/api/traffic/", {"group": "flow"}).json()["results"]
    assert len(flows) == 3 and flows[0]["bytes_out"] >= flows[-1]["bytes_out"]
    last_minute = (time.time_ns() // 60_000_000_000 - 1) * 60
    since = dt.datetime.fromtimestamp(last_minute, dt.UTC).isoformat()
    recent = client.get("/api/traffic/", {"since": since}).json()["results"][0]
    assert recent["bytes_out"] == 10000  # the two rows of the last minute
    assert client.get("/api/traffic/", {"period": "year"}).status_code == 400
    assert "ISO 8601" in client.get("/api/traffic/", {"since": "yesterday"}).json()["error"]


def test_the_page_csv_and_container_page_show_it(client, staff, stored):
    client.force_login(staff)
    page = client.get("/traffic/").content.decode()
    assert "edge-app-prod" in page and "127.22.0.2:443" in page and "Top talkers" in page
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get("/traffic/export.csv").streaming_content).decode())))
    assert [(r["container"], r["bytes_out"]) for r in rows] == [("edge-app-prod", "15000")]
    per_flow = b"".join(client.get("/traffic/export.csv", {"group": "flow"}).streaming_content).decode()
    assert per_flow.count("\n") == 4  # a header and three flows
    c = Container.objects.get(name="edge-app-prod")
    assert "14.6 KB out" in " ".join(client.get(f"/containers/{c.pk}/").content.decode().split())
    assert client.get("/traffic/", {"period": "year"}).status_code == 400


def test_traffic_minutes_are_kept_as_long_as_rollups(stored):
    done = prune(days=1, rollup_days=2)
    assert done.traffic == 1 and TrafficMinute.objects.count() == 3


def test_the_nodes_page_says_when_traffic_went_uncounted(client, staff, node):
    node.health = {"traffic": {"bytes_in": 5, "lost_bytes": 1500}}
    node.save()
    client.force_login(staff)
    assert "1500 bytes of traffic counted nowhere" in client.get("/nodes/").content.decode()
