"""File opens in a container through the real kernel, agent and dashboard: a read of a
watched credential file and a write to a watched directory are reported with their access
and result, ordinary opens are not, a file rule kills the opener before the open returns
(it never reads a byte, and the violation says so), a relative open is judged by the
path it resolved to (a deny then kills at the open's exit), a rule the kernel cannot judge is
reported as not enforced, like opens are counted in the kernel, and nothing is reported
for processes outside the scope. (The watched paths are this test's own: it never writes
the host's /etc; tests/kernel/test_runtimes.py does that inside real containers.)"""

import asyncio
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from dashboard.events.models import ProcessEvent, Violation
from dashboard.fleet.models import Node
from monitor.agent import Agent
from monitor.files import WRITES, Watch

from .conftest import ROOT, deliver_until
from .test_enforce_agent import run_agent as running
from .test_enforce_agent import stop

pytestmark = [pytest.mark.kernel, pytest.mark.django_db(transaction=True)]

OPENER = r"""
import os, sys
root = sys.argv[1]
print(open(f"{root}/secrets/key").read(), flush=True)
try:
    open(f"{root}/secrets/missing")
except FileNotFoundError:
    print("missing", flush=True)
with open(f"{root}/etc/app.conf", "w") as fh:
    fh.write("x")
open(f"{root}/etc/app.conf").read()  # reading under etc is not watched, writing is
open(f"{root}/plain", "w").close()  # nor is an ordinary file
for _ in range(int(sys.argv[2])):  # a storm of like opens
    open(f"{root}/secrets/key").close()
os.chdir(f"{root}/etc")
open("../secrets/key").read()  # relative: judged by the file it resolves to
os.chdir(f"{root}/secrets")
print("before", flush=True)
print(open("forbidden").read(), flush=True)  # relative too, and killed: this never prints
print("after", flush=True)
"""


def watches(root):
    return (Watch(f"{root}/secrets/*", ("read",)), Watch(f"{root}/etc/*", WRITES))


async def test_watched_opens_are_reported_with_access_and_result_and_a_file_rule_kills(enforcement, tmp_path):
    root = tmp_path / "fs"
    for d in ("secrets", "etc", "glob"):
        (root / d).mkdir(parents=True)
    (root / "secrets" / "key").write_text("k1")
    (root / "secrets" / "forbidden").write_text("you should never read this")
    (root / "glob" / "a.pem").write_text("pem")
    (root / "glob" / "b.key").write_text("key")
    node = await sync_to_async(Node.objects.create)(name="files-node", token_hash="f" * 64)
    app = enforcement.container("edge-app-prod")
    enforcement.enforcer.watches = watches(root)
    policy = [
        {"id": "no-forbidden", "severity": "high", "match": {"path": f"{root}/secrets/forbidden", "access": ["read"]},
         "action": "deny"},
        {"id": "pem-glob", "match": {"path": f"{root}/glob/*.pem", "container": "edge-*"}, "action": "deny"},
        {"id": "key-glob", "match": {"path": f"{root}/glob/?.key"}, "action": "deny"},
    ]  # fmt: skip
    agent = Agent(backends=(), docker_roots=(str(tmp_path),), enforcer=enforcement.enforcer)
    agent.set_policy(1, policy)
    runner = await running(agent)
    storm = 3000
    try:
        opener = app.spawn([sys.executable, "-c", OPENER, str(root), str(storm)], cwd=ROOT, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
        out, _ = await asyncio.to_thread(opener.communicate, timeout=20)
        assert (opener.returncode, out.split("\n")) == (-9, ["k1", "missing", "before", ""])  # not one byte of it
        reader = app.spawn(["/bin/cat", str(root / "glob" / "a.pem")], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(reader.communicate, timeout=10))[0] == ""  # a prefix and a suffix: killed
        keys = app.spawn(["/bin/cat", str(root / "glob" / "b.key")], stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(keys.communicate, timeout=10))[0] == "key"  # judged after: it ran
        host = await asyncio.to_thread((root / "secrets" / "forbidden").read_text)  # this test: outside the scope
        assert host.startswith("you should")

        def settled():
            keys = ProcessEvent.objects.filter(kind="open", path=f"{root}/secrets/key", result__gte=0)
            return Violation.objects.count() >= 3 and (keys.aggregate(n=Sum("count"))["n"] or 0) >= storm + 2

        await deliver_until(agent, node, settled, timeout=15)
    finally:
        await stop(runner)

    def check():
        opens = ProcessEvent.objects.filter(kind="open")
        key = opens.filter(path=f"{root}/secrets/key")
        assert key.aggregate(n=Sum("count"))["n"] == storm + 2  # every open counted, in the kernel
        assert key.count() < storm / 10  # ... in a few rows
        first = key.order_by("ts").first()
        python = os.path.realpath(sys.executable)  # the file that runs, not the name it was run by
        assert (first.access, first.result_text, first.binary, first.pid) == ("read", "ok", python, opener.pid)
        assert first.container.name == "edge-app-prod"
        missing = opens.get(path=f"{root}/secrets/missing")
        assert (missing.access, missing.result_text) == ("read", "ENOENT")
        conf = opens.get(path=f"{root}/etc/app.conf")
        assert (conf.access, conf.result_text) == ("write,create,truncate", "ok")
        assert not opens.filter(path=f"{root}/plain").exists()
        v = Violation.objects.get(rule_id="no-forbidden")
        assert (v.kind, v.target, v.enforced, v.unenforced, v.severity) == (
            "open", f"{root}/secrets/forbidden (read)", True, "", "high"
        )  # fmt: skip
        assert v.process.pid == opener.pid and v.process.verdict == "deny"
        cat = os.path.realpath("/bin/cat")
        g = Violation.objects.get(rule_id="pem-glob")
        assert (g.kind, g.enforced, g.unenforced, g.process.binary) == ("open", True, "", cat)
        k = Violation.objects.get(rule_id="key-glob")
        assert (k.kind, k.enforced, k.process.binary) == ("open", False, cat)
        assert "after the open" in k.unenforced  # a glob only the agent judges: reported, never claimed
        assert not opens.exclude(container__name="edge-app-prod").exists()  # nothing outside the scope
        [gone] = ProcessEvent.objects.filter(kind="exit", pid=opener.pid)
        assert gone.exit_text == "killed by signal 9"

    await sync_to_async(check)()
