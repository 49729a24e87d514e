"""/metrics: Prometheus text from what nodes report, for allowed scrapers only."""

import pytest
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def reporting(node):
    node.health = {
        "verdicts": {"allow": 90, "alert": 7, "deny": 3},
        "backends": {"connect": {"lost_events": 4, "restarts": 1}, "kernel": {"lost_events": 0, "restarts": 2}},
        "kernel_lost": 3,  # calls the programs could neither send nor count
        "outbox_dropped": 5,
        "spool": 12,
        "spool_dropped": 6,
        "kernel": {"policy_version": 9, "counters": {"deny-db": 3}},
        "not_enforced": 2,  # deny verdicts the kernel let through
        "not_enforced_reasons": {"not a container in the enforce scope": 2},
        "holds": {"held": 5, "released": 5, "expired": 1, "pending": 0, "max_ms": 412.5},
    }
    node.policy_version = 9
    node.last_seq = 100
    node.save()
    return node


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.django_db
def test_metrics_from_loopback(client, reporting):
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    got = samples(response.content.decode())
    n = ("node", "edge-1")
    assert got[("crossedge_agent_events_total", (n, ("verdict", "deny")))] == 3
    assert got[("crossedge_events_lost_total", (n, ("stage", "kernel_buffer")))] == 4 + 3
    assert got[("crossedge_events_lost_total", (n, ("stage", "agent_queue")))] == 5
    assert got[("crossedge_events_lost_total", (n, ("stage", "spool_cap")))] == 6
    assert got[("crossedge_backend_restarts_total", (("backend", "kernel"), n))] == 2
    assert got[("crossedge_kernel_decisions_total", (n, ("rule", "deny-db")))] == 3
    assert got[("crossedge_spool_depth", (n,))] == 12
    assert got[("crossedge_policy_version", (n, ("where", "kernel")))] == 9
    assert got[("crossedge_node_last_stored_seq", (n,))] == 100
    assert got[("crossedge_deny_not_enforced_total", (n,))] == 2
    assert got[("crossedge_container_holds_total", (n, ("outcome", "held")))] == 5
    assert got[("crossedge_container_holds_total", (n, ("outcome", "expired")))] == 1


@pytest.mark.django_db
def test_metrics_refuse_other_addresses_without_the_token(client, reporting, settings):
    settings.METRICS_TOKEN = "s3cret-scrape"
    far = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/metrics", **far).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **far).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape", **far).status_code == 200


@pytest.mark.django_db
def test_malformed_health_still_scrapes(client, node):
    node.health = {"verdicts": "x", "backends": {"a": 3}, "spool": "deep", "kernel": []}
    node.save()
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_losses_by_stage_on_the_node_page_and_in_the_api(client, staff, reporting):
    client.force_login(staff)
    page = client.get("/nodes/").content.decode()
    assert "lost: 7 in kernel buffers, 5 in the agent queue, 6 at the spool cap" in page
    [row] = client.get("/api/nodes/").json()["results"]
    assert row["lost"] == {"kernel_buffer": 7, "agent_queue": 5, "spool_cap": 6}


@pytest.mark.django_db
def test_a_request_forwarded_by_a_local_proxy_is_not_loopback(client, reporting, settings):
    """Behind a reverse proxy on the same machine every request came from 127.0.0.1 and was
    let in (issue 16). Forwarded requests now need the token, or a trusted proxy's word."""
    settings.METRICS_TOKEN = "s3cret-scrape"
    public = {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client.get("/metrics", **public).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape", **public).status_code == 200
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert client.get("/metrics", **public).status_code == 403  # the proxy says: from far away
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.1, 127.0.0.1").status_code == 200
