"""The JSON API: filters, cursor pagination, session or token auth."""

import pytest

from dashboard.api.models import ApiToken
from dashboard.events.ingest import ingest_batch

from .conftest import agent_event


@pytest.fixture
def events(node):
    other = {"runtime": "docker", "id": "cd" * 32, "name": "edge-app-staging", "pod_uid": ""}
    ingest_batch(
        node,
        [agent_event(1), agent_event(2, verdict="allow", rule_id="", severity="")]
        + [
            agent_event(
                3,
                container=other,
                cgroup_path="/docker/" + "cd" * 32,
                verdict="deny",
                rule_id="rule-002",
                dest_port=3306,
            )
        ],
    )


@pytest.mark.django_db
def test_unauthenticated_gets_401(client):
    assert client.get("/api/connections/").status_code == 401
    assert client.get("/api/violations/", HTTP_AUTHORIZATION="Token nope").status_code == 401


@pytest.mark.django_db
def test_token_auth_and_filters(client, staff, events):
    _, key = ApiToken.create_for(staff, "script")
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    rows = client.get("/api/connections/", **auth).json()["results"]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True) and len(rows) == 3
    assert len(client.get("/api/connections/?action=allow", **auth).json()["results"]) == 1
    assert [
        r["rule_id"] for r in client.get("/api/violations/?container=edge-app-staging", **auth).json()["results"]
    ] == ["rule-002"]
    alerts = client.get("/api/violations/?rule=rule-001", **auth).json()["results"]
    assert [(r["action"], r["count"]) for r in alerts] == [("alert", 1)]  # each row says how many calls
    assert client.get("/api/violations/?since=2999-01-01T00:00:00Z", **auth).json()["results"] == []
    assert client.get("/api/violations/?since=yesterday", **auth).status_code == 400
    assert client.get("/api/violations/?action=maybe", **auth).status_code == 400


@pytest.mark.django_db
def test_cursor_pagination_walks_every_row_once(client, staff, events):
    client.force_login(staff)
    url, seen = "/api/connections/?limit=2", []
    while url:
        page = client.get(url).json()
        seen += [r["id"] for r in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 3
    assert client.get("/api/connections/?limit=0").status_code == 400
