"""The local node under `make run` (issue 16): revoking it stops its agent, not the
dashboard, and running the local agent again does not lift the revocation."""

import io
from types import SimpleNamespace

import pytest
from django.core.management import CommandError

from dashboard.fleet.management.commands import up
from dashboard.fleet.management.commands.runagent import Command as RunAgent
from dashboard.fleet.models import Node


@pytest.mark.django_db
def test_running_the_local_agent_again_does_not_unrevoke_its_node():
    command = RunAgent(stdout=io.StringIO())
    assert command.enrol_local("edge-local")
    Node.objects.filter(name="edge-local").update(revoked=True)
    with pytest.raises(CommandError, match="revoked"):
        command.enrol_local("edge-local")
    assert Node.objects.get(name="edge-local").revoked


def test_an_agent_that_exits_leaves_the_dashboard_running(monkeypatch):
    stopping = []
    ticks = []

    def sleep(_):
        ticks.append(1)
        if len(ticks) == 3:
            stopping.append(1)  # Ctrl-C

    monkeypatch.setattr(up.time, "sleep", sleep)
    dashboard = SimpleNamespace(poll=lambda: None, returncode=None)
    agent = SimpleNamespace(poll=lambda: 1, returncode=1)  # refused: its node was revoked
    command = up.Command(stdout=io.StringIO(), stderr=io.StringIO())
    command.watch({"dashboard": dashboard, "agent": agent}, stopping)
    assert len(ticks) == 3  # went on until Ctrl-C
    assert command.stderr.getvalue().count("agent exited with status 1; the dashboard keeps running") == 1
    with pytest.raises(CommandError, match="the dashboard exited"):
        command.watch({"dashboard": SimpleNamespace(poll=lambda: 3, returncode=3)}, [])


@pytest.mark.django_db
def test_an_enrolment_token_always_passes_as_the_agents_token_argument():
    """A random token starting with "-" (1 in 64 before the prefix) was taken by argparse for
    an option: `runagent --token -abc` failed with "expected one argument"."""
    parser = RunAgent().create_parser("manage.py", "runagent")
    for i in range(300):
        token = Node(name=f"n{i}").issue_token()
        assert token.startswith("cxn_") and parser.parse_args(["--token", token]).token == token
