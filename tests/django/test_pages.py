"""Pages need a login and render what is stored, as text."""

import pytest
from django.core.management import CommandError, call_command

from dashboard.events.ingest import ingest_batch

from .conftest import agent_event

PAGES = ["/", "/feed/connections/", "/feed/violations/", "/nodes/", "/containers/", "/rules/"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", PAGES)
def test_pages_require_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_pages_render_stored_rows_escaped(client, staff, node):
    ingest_batch(node, [agent_event(1, comm="<img src=x>")])
    client.force_login(staff)
    for url in PAGES:
        assert client.get(url).status_code == 200, url
    overview = client.get("/").content.decode()
    assert "&lt;img src=x&gt;" in overview and "<img src=x>" not in overview
    assert "edge-app-prod" in client.get("/containers/").content.decode()
    assert client.get("/feed/nonsense/").status_code == 404


@pytest.mark.django_db
def test_runagent_refuses_without_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(CommandError, match="must run as root"):
        call_command("runagent")
