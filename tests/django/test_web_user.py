"""`make run` serves the dashboard as an unprivileged user (issue 16: daphne ran as root);
only the agent needs root. Where that user cannot read the checkout, it says so and runs
as root."""

import http.cookiejar
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def others_can_read(path: Path) -> bool:
    """Whether a user with no group in common can reach and read this checkout and run its
    interpreter (the venv's python may be a link into root's home, as with pyenv)."""
    python = Path(os.path.realpath(sys.executable))
    for part in [path, *path.parents, *python.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return bool((path / "manage.py").stat().st_mode & stat.S_IROTH and python.stat().st_mode & stat.S_IXOTH)


def log_in(port: int, user: str, password: str) -> str:
    """Log in through the login form; the path landed on."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"http://127.0.0.1:{port}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"username": user, "password": password, "csrfmiddlewaretoken": token}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/accounts/login/", data=data,
                                     headers={"Referer": f"http://127.0.0.1:{port}/accounts/login/"})  # fmt: skip
    return urllib.parse.urlparse(opener.open(request, timeout=10).geturl()).path


def children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
def test_the_dashboard_runs_as_the_web_user():
    user = f"cx-web-{uuid.uuid4().hex[:6]}"
    var = Path(tempfile.mkdtemp(prefix="crossedge-web-", dir="/var/tmp"))
    var.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"CROSSEDGE_VAR_DIR": str(var), "CROSSEDGE_WEB_USER": user, "CROSSEDGE_ADMIN_PASSWORD": "pw-web-user-1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = None
    try:
        for step in (["migrate", "--noinput"], ["ensureadmin"]):  # as `make run` does, as root
            subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True, capture_output=True)
        up = subprocess.Popen([sys.executable, "manage.py", "up", "--no-agent", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5)
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("the dashboard did not answer within 30 s")
        assert page.status == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the pruner and the alerts start once the dashboard answers
            children = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children_of(up.pid)}
            if {b"prune", b"alerts"} <= {arg for argv in children.values() for arg in argv}:
                break
            time.sleep(0.2)
        [daphne] = [pid for pid, argv in children.items() if b"daphne" in argv]
        [pruner] = [pid for pid, argv in children.items() if b"prune" in argv]  # it writes the database too
        [alerts] = [pid for pid, argv in children.items() if b"alerts" in argv]  # and so does the dispatcher

        def uid_of(pid):
            return int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("Uid:")).split()[1])

        uid = uid_of(daphne)
        assert uid_of(pruner) == uid_of(alerts) == uid
        if others_can_read(ROOT):
            assert uid == pwd.getpwnam(user).pw_uid != 0  # served, and not as root
            assert (var / "crossedge.sqlite3").stat().st_uid == uid
        else:  # e.g. a checkout under /root: said, not hidden
            assert uid == 0
        assert log_in(port, "admin", "pw-web-user-1") == "/"  # the web process writes its database (a session)
    finally:
        if up is not None:
            up.send_signal(signal.SIGTERM)
            out, err = up.communicate(timeout=30)
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", user], capture_output=True)
        shutil.rmtree(var, ignore_errors=True)
    if not others_can_read(ROOT):
        assert f"warning: the dashboard runs as root: {user} cannot run it here" in err
        assert os.environ.get("CI", "").lower() != "true", "make test builds the venv on /usr/bin/python3"
