"""What a user sees, in a real browser, with real traffic from real cgroups."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from monitor.testbed import DnsServer, listen
from tests.receivers import Webhook

from .conftest import ARTIFACTS, ROOT, login

pytestmark = pytest.mark.kernel
CONNECT = "import sys; from monitor.testbed import connect_once as c; c(sys.argv[1], int(sys.argv[2]))"


def connect_from(container, port):
    container.spawn([sys.executable, "-c", CONNECT, "127.10.10.5", str(port)], cwd=ROOT).wait(10)


def test_filtered_violation_feed_shows_only_that_containers_connect(page, product):
    login(page, product.base, "admin")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    page.goto(f"{product.base}/feed/violations/?container=e2e-a")
    expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
    connect_from(product.containers["e2e-b"], product.target_port)  # matches the rule, other container
    connect_from(product.containers["e2e-a"], product.target_port)
    row = page.locator("#feed-rows tr", has_text="e2e-a")
    expect(row.first).to_be_visible(timeout=3_000)
    expect(row.first).to_contain_text("e2e-suspicious")
    page.wait_for_timeout(1000)  # b's event is stored by now too; it must not be shown
    expect(page.locator("#feed-rows tr", has_text="e2e-b")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "violations-feed.png"), full_page=True)
    page.goto(f"{product.base}/feed/connections/?container=e2e-a")  # backfilled from the database
    conn = page.locator("#feed-rows tr", has_text="127.10.10.5").first
    expect(conn).to_contain_text("e2e-a", timeout=5_000)
    expect(conn).to_contain_text("—")  # seen by the kernel programs as the call began: no result to show
    page.screenshot(path=str(ARTIFACTS / "connections-feed.png"), full_page=True)
    for name, path in (("overview-after", "/"), ("nodes", "/nodes/"), ("search", "/events/?container=e2e-a"),
                       ("grouped", "/violations/grouped/"), ("rules", "/rules/")):  # fmt: skip
        page.goto(f"{product.base}{path}")
        expect(page.locator("h1")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_viewer_cannot_reach_the_rule_edit_page(page, product):
    login(page, product.base, "val")
    page.goto(f"{product.base}/rules/e2e-suspicious/")
    expect(page.locator("h1")).to_contain_text("e2e-suspicious")
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    page.goto(f"{product.base}/admin/policy/rule/1/change/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))


def test_an_editor_changes_a_rule_and_sees_it_in_the_history(page, product):
    login(page, product.base, "eddie")
    page.goto(f"{product.base}/rules/e2e-suspicious/")
    page.get_by_role("link", name="Edit").click()
    page.fill("input[name=description]", "Alert on the suspicious host (reviewed)")
    page.click("input[name=_save]")
    page.goto(f"{product.base}/rules/e2e-suspicious/")
    history = page.locator("#history")
    expect(history).to_contain_text("eddie")
    expect(history).to_contain_text("(reviewed)")
    page.screenshot(path=str(ARTIFACTS / "rule-page.png"), full_page=True)
    page.get_by_role("link", name="30d").click()  # per day: stored violations and rollups
    expect(page.locator("h2", has_text="Hits per day, last 30 days")).to_be_visible()
    expect(page.locator("svg rect.alert").last).to_be_attached()  # today's hits, from the first test
    page.screenshot(path=str(ARTIFACTS / "rule-page-30d.png"), full_page=True)


def test_an_editor_tests_a_draft_rule_against_stored_events(page, product):
    connect_from(product.containers["e2e-a"], product.target_port)
    login(page, product.base, "eddie")
    page.goto(f"{product.base}/rule-test/")
    page.fill("input[name=dest_ip]", "127.10.10.5/32")
    page.fill("input[name=container]", "e2e-*")
    page.get_by_role("button", name="Test").click()
    total = page.locator("#draft-total")
    expect(total).to_be_visible()
    assert int(total.inner_text()) >= 1
    page.screenshot(path=str(ARTIFACTS / "draft-test.png"), full_page=True)


REPLAY = """
import time
from dashboard.events.ingest import ingest_batch
from dashboard.fleet.models import Node
node = Node.objects.create(name="e2e-replay", token_hash="r" * 64)
labels = {"io.kubernetes.pod.name": "shop-0", "io.kubernetes.pod.namespace": "prod", "app": "shop"}
container = {"runtime": "docker", "id": "ee" * 32, "name": "e2e-shop", "pod_uid": "", "image": "edge/shop:1.4",
             "labels": labels}
event = {"seq": 1, "kind": "kernel", "ts_ns": time.time_ns(), "pid": 7, "tid": 7, "uid": 0, "gid": 0,
         "cgroup_id": 9, "cgroup_path": "/docker/" + "ee" * 32, "family": 4, "dest_ip": "127.10.10.5",
         "dest_port": 53, "result": None, "comm": "<b>dig</b>", "container": container, "verdict": "deny",
         "rule_id": "e2e-dns", "severity": "high", "policy_version": 1, "op": "sendmsg",
         "unenforced": "container not yet listed in the kernel"}
assert ingest_batch(node, [event]).stored == 1
"""


def test_a_deny_the_kernel_did_not_apply_never_reads_refused(page, product):
    """What staff see of a deny verdict that went through (stored as an agent sends it), and
    of a container's image and labels."""
    product.manage("shell", "--no-imports", "-c", REPLAY)
    login(page, product.base, "admin")
    page.goto(f"{product.base}/feed/violations/?rule=e2e-dns")
    row = page.locator("#feed-rows tr", has_text="e2e-dns").first
    expect(row).to_contain_text("NOT enforced: container not yet listed in the kernel", timeout=5_000)
    expect(row).to_contain_text("127.10.10.5:53 (udp sendto)")
    expect(row).to_contain_text("<b>dig</b>")  # a process name is text, never markup
    expect(row).not_to_contain_text("refused")
    page.screenshot(path=str(ARTIFACTS / "violations-not-enforced.png"), full_page=True)
    page.goto(f"{product.base}/containers/")
    page.get_by_role("link", name="e2e-shop").click()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("edge/shop:1.4")
    expect(facts).to_contain_text("prod/shop-0")
    expect(facts).to_contain_text("app=shop")
    expect(page.locator("section", has_text="Violations")).to_contain_text("NOT enforced")
    expect(page.locator("section", has_text="Violations")).not_to_contain_text("refused")
    page.screenshot(path=str(ARTIFACTS / "container.png"), full_page=True)


SPAWN = "import subprocess, sys; subprocess.run(['/bin/sh', '-c', 'echo hi']); subprocess.run([sys.argv[1], 'x'])"


def test_a_forbidden_binary_shows_live_as_killed_and_the_container_shows_its_process_tree(page, product):
    login(page, product.base, "admin")
    page.goto(f"{product.base}/feed/violations/?rule=e2e-no-forbidden")
    expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
    server = product.containers["e2e-a"].spawn([sys.executable, "-c", SPAWN, product.forbidden], cwd=ROOT)
    assert server.wait(10) == 0
    row = page.locator("#feed-rows tr", has_text="e2e-no-forbidden").first
    expect(row).to_contain_text(f"exec {product.forbidden}", timeout=5_000)
    expect(row).to_contain_text("deny · killed at exec")
    expect(row).to_contain_text("e2e-a")
    page.screenshot(path=str(ARTIFACTS / "violations-exec.png"), full_page=True)
    row.get_by_role("link").first.click()  # the process that caused it
    expect(page.locator("h1")).to_contain_text(product.forbidden)
    expect(page.locator("section", has_text="Started by")).to_contain_text("bin/python")
    expect(page.locator("section", has_text="Violations")).to_contain_text("killed at exec")
    expect(page.locator("dl.facts")).to_contain_text("killed by signal 9")
    page.screenshot(path=str(ARTIFACTS / "process.png"), full_page=True)
    page.goto(f"{product.base}/feed/processes/?container=e2e-a")
    shell = page.locator("#feed-rows tr", has_text=f"{SH} -c echo hi").first  # the file that ran...
    expect(shell).to_contain_text("as /bin/sh")  # ...and the name it was run by
    expect(shell).to_contain_text(f"bin/python3.11 [{server.pid}]", timeout=5_000)  # its parent, the file too
    page.screenshot(path=str(ARTIFACTS / "processes-feed.png"), full_page=True)
    page.goto(f"{product.base}/containers/")
    page.get_by_role("link", name="e2e-a").click()
    tree = page.locator("section", has_text="Process tree")
    expect(tree.locator("ul.tree ul.tree li", has_text=SH).first).to_be_visible()
    expect(tree).to_contain_text("1 violation")
    expect(tree).to_contain_text("killed by signal 9")
    page.screenshot(path=str(ARTIFACTS / "container-processes.png"), full_page=True)


SH = os.path.realpath("/bin/sh")  # on Debian, /usr/bin/dash: what runs
READER = "import sys; print(open(sys.argv[1] + '/token').read()); print(open(sys.argv[1] + '/secret').read())"


def test_a_forbidden_read_shows_live_as_killed_and_the_container_shows_its_file_accesses(page, product):
    login(page, product.base, "admin")
    page.goto(f"{product.base}/feed/violations/?rule=e2e-no-secret")
    expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
    reader = product.containers["e2e-b"].spawn([sys.executable, "-c", READER, product.secrets], cwd=ROOT,
                                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    out, _ = reader.communicate(timeout=10)
    assert (reader.returncode, out) == (-9, "t0ken\n")  # killed at the open: not a byte of the secret
    row = page.locator("#feed-rows tr", has_text="e2e-no-secret").first
    expect(row).to_contain_text(f"open {product.secrets}/secret (read)", timeout=5_000)
    expect(row).to_contain_text("deny · killed at open")
    expect(row).to_contain_text("e2e-b")
    page.screenshot(path=str(ARTIFACTS / "violations-open.png"), full_page=True)
    row.get_by_role("link").first.click()  # the process that caused it
    expect(page.locator("section", has_text="Files it opened")).to_contain_text(f"{product.secrets}/token")
    expect(page.locator("section", has_text="Violations")).to_contain_text("killed at open")
    page.screenshot(path=str(ARTIFACTS / "process-files.png"), full_page=True)
    page.goto(f"{product.base}/feed/processes/?container=e2e-b&event=open")
    expect(page.locator("#feed-rows tr", has_text="token").first).to_contain_text("(read) → ok", timeout=5_000)
    page.screenshot(path=str(ARTIFACTS / "files-feed.png"), full_page=True)
    page.goto(f"{product.base}/containers/")
    page.get_by_role("link", name="e2e-b").click()
    files = page.locator("section", has_text="Recent file accesses")
    expect(files.locator("tr", has_text="/secrets/token")).to_contain_text("ok")
    expect(files.locator("tr", has_text="/secrets/secret")).to_contain_text("deny")
    page.screenshot(path=str(ARTIFACTS / "container-files.png"), full_page=True)


def test_the_browser_reached_nothing_but_loopback(product, browser_jail):
    """Chromium's own attempts elsewhere (an IPv6 reachability probe) were refused in the kernel."""
    out = product.manage(
        "shell",
        "--no-imports",
        "-c",
        "from dashboard.events.models import ConnectionEvent as E; import json; print(json.dumps(list("
        "E.objects.filter(cgroup_path__contains='-browser.slice').exclude(dest_ip__startswith='127.')"
        ".exclude(dest_ip='::1').values_list('dest_ip', 'result'))))",
    )
    escaped = [(ip, result) for ip, result in json.loads(out.splitlines()[-1]) if result != -1]
    assert escaped == []


def test_an_admin_adds_a_webhook_output_and_alerts_and_a_test_alert_reach_it(page, product):
    hook = Webhook().start()
    try:
        login(page, product.base, "admin")
        page.goto(f"{product.base}/admin/alerts/output/add/")
        page.fill("input[name=name]", "e2e-hook")
        page.select_option("select[name=kind]", "webhook")
        page.fill("input[name=target]", hook.url)
        page.fill("input[name=rules]", "e2e-suspicious")
        page.fill("input[name=containers]", "e2e-a")
        page.fill("input[name=dedupe_seconds]", "0")
        page.click("input[name=_save]")
        expect(page.locator(".messagelist")).to_contain_text("was added successfully")
        connect_from(product.containers["e2e-b"], product.target_port)  # not routed: another container
        connect_from(product.containers["e2e-a"], product.target_port)
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # b's violation is routed by now too; it must not arrive
        alerts = [b["crossedge"] for b in hook.bodies()]
        assert alerts and {(a["rule_id"], a["container_name"]) for a in alerts} == {("e2e-suspicious", "e2e-a")}
        page.goto(f"{product.base}/alerts/")
        row = page.locator("#outputs tr", has_text="e2e-hook")
        expect(row).to_contain_text("ok")
        row.get_by_role("button", name="Send a test alert").click()
        expect(page.locator(".notice")).to_contain_text("e2e-hook: test alert delivered")
        assert hook.bodies()[-1]["crossedge"]["test"] is True
        expect(page.locator("#notifications tr", has_text="test alert").first).to_contain_text("sent")
        page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
    finally:
        hook.stop()


def test_the_audit_trail_shows_who_did_what_from_the_pages_and_the_command_line(page, product):
    login(page, product.base, "val")  # a viewer: no audit link, and the page is refused
    expect(page.locator("nav")).not_to_contain_text("Audit")
    assert page.goto(f"{product.base}/audit/").status == 403
    page.goto(f"{product.base}/")
    page.click("text=Log out")
    login(page, product.base, "admin")
    page.click("nav >> text=Audit")
    rows = page.locator("#audit tbody tr")

    def entry(*texts):
        found = rows
        for text in texts:
            found = found.filter(has_text=text)
        return found

    expect(entry("signed in", "val", "127.0.0.1").first).to_be_visible()
    expect(entry("API token issued", "cli: apitoken (root)")).to_have_count(1)
    expect(entry("policy imported", "cli: policy import")).to_have_count(1)
    expect(entry("node enrolled", "cli: runagent (root)")).to_have_count(1)
    expect(entry("added in the admin", "output e2e-hook", "admin")).to_have_count(1)
    expect(entry("test alert sent", "e2e-hook", "delivered: True")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
    page.select_option("select[name=action]", "login")
    page.click("form.filters button[type=submit]")
    expect(rows.first).to_contain_text("signed in")
    expect(page.locator("#audit tbody")).not_to_contain_text("API token issued")


def test_a_deny_by_name_shows_live_with_the_name_and_connections_show_what_was_resolved(page, product):
    """A container asks the test's DNS server (loopback) for two names and connects to each
    answer at once: the denied name is refused and shows live with its name; the search by
    *.e2e.test finds both calls, each with the name the container resolved."""
    login(page, product.base, "admin")
    first = listen("127.21.0.1", 0)
    port = first.getsockname()[1]
    second = listen("127.21.0.2", port)
    try:
        with DnsServer("127.53.53.53") as server:
            server.set("blocked.e2e.test", "127.21.0.1")
            server.set("ok.e2e.test", "127.21.0.2")
            page.goto(f"{product.base}/feed/violations/?rule=e2e-no-blocked-name")
            expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
            argv = [sys.executable, "-m", "monitor.testbed", "resolve", "127.53.53.53", str(port), "blocked.e2e.test",
                    "ok.e2e.test"]  # fmt: skip
            client = product.containers["e2e-a"].spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            out, _ = client.communicate(timeout=30)
        assert out.split() == ["127.21.0.1", "1", "127.21.0.2", "0"]  # EPERM for the denied name
        row = page.locator("#feed-rows tr", has_text="e2e-no-blocked-name").first
        expect(row).to_contain_text("blocked.e2e.test", timeout=5_000)
        expect(row).to_contain_text("refused")
        expect(row).to_contain_text("e2e-a")
        page.screenshot(path=str(ARTIFACTS / "violations-by-name.png"), full_page=True)
        page.goto(f"{product.base}/events/?name=*.e2e.test")
        rows = page.locator("table tbody tr")
        expect(rows.filter(has_text="ok.e2e.test")).to_have_count(1, timeout=5_000)
        expect(rows.filter(has_text="blocked.e2e.test")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "search-by-name.png"), full_page=True)
        page.goto(f"{product.base}/feed/connections/?name=ok.e2e.test")  # the live feed's filter, backfilled
        expect(page.locator("#feed-rows tr", has_text="ok.e2e.test · 127.21.0.2")).to_have_count(1, timeout=5_000)
        expect(page.locator("#feed-rows tr", has_text="blocked.e2e.test")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "connections-by-name.png"), full_page=True)
        page.goto(f"{product.base}/rule-test/?dest_fqdn=*.e2e.test")
        expect(page.locator("#draft-total")).to_have_text("2")
        page.screenshot(path=str(ARTIFACTS / "draft-by-name.png"), full_page=True)
        page.goto(f"{product.base}/admin/policy/rule/?q=e2e-no-blocked-name")
        page.get_by_role("link", name="e2e-no-blocked-name").click()
        expect(page.locator("input[name=dest_fqdn]")).to_have_value("blocked.e2e.test")
        page.screenshot(path=str(ARTIFACTS / "admin-rule-by-name.png"), full_page=True)
    finally:
        first.close()
        second.close()


def test_a_scan_is_one_violation_live_and_its_calls_one_summed_row(page, product):
    """A container connects to 1,000 closed loopback ports flat out: the 100th new destination
    in a second trips the scan rule, which refuses it and the rest for its hold; the violation
    feed shows one scan violation live, and the connections page shows the scan as a few
    summed rows whose counts add up to every call."""
    login(page, product.base, "admin")
    page.goto(f"{product.base}/feed/violations/?rule=e2e-scan-guard")
    expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
    argv = [sys.executable, "-m", "monitor.testbed", "scan", "127.77.0.1", "21000", "1000"]
    scanner = product.containers["e2e-b"].spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out, _ = scanner.communicate(timeout=60)
    assert json.loads(out) == {"111": 99, "1": 901}  # ECONNREFUSED by the closed ports, then EPERM
    rows = page.locator("#feed-rows tr", has_text="e2e-scan-guard")
    expect(rows).to_have_count(1, timeout=10_000)
    expect(rows.first).to_contain_text("scan: 100 new destinations within 1 s")
    expect(rows.first).to_contain_text("refused by kernel")
    page.screenshot(path=str(ARTIFACTS / "violations-scan.png"), full_page=True)
    api = f"{product.base}/api/connections/?container=e2e-b&dest=127.77.0.1&limit=500"
    deadline = time.monotonic() + 10
    while sum(e["count"] for e in page.request.get(api).json()["results"]) < 1000 and time.monotonic() < deadline:
        time.sleep(0.5)  # the agent reads the scan's sums every second
    stored = page.request.get(api).json()
    assert sum(e["count"] for e in stored["results"]) == 1000 and not stored["next"]  # every call, once
    assert len(stored["results"]) < 120  # 99 refused by the closed ports, one by the rule, the rest summed
    page.goto(f"{product.base}/events/?container=e2e-b&dest=127.77.0.1")
    expect(page.locator("table tbody tr", has_text="scan, new destinations").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "search-scan.png"), full_page=True)


def test_a_syn_flood_is_one_violation_live_and_its_source_dropped(page, product):
    """A burst of SYNs from a namespace of the test's own reaches the node's XDP interface
    (in the other namespace): one SYN flood violation live, the source dropped at once."""
    login(page, product.base, "admin")
    page.goto(f"{product.base}/feed/violations/?rule=e2e-syn-flood")
    expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
    burst = (
        "import socket\n"
        "for i in range(500):\n"
        "    s = socket.socket(); s.setblocking(False); s.connect_ex(('198.18.0.2', 20000 + i % 50)); s.close()\n"
        "s = socket.socket(); s.settimeout(0.5)\n"
        "print(s.connect_ex(('198.18.0.2', 22)))\n"  # dropped at XDP: no RST comes back, it times out
    )
    out = subprocess.run(["nsenter", f"--net=/run/netns/{product.netns[0]}", sys.executable, "-c", burst],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert out.strip() == "11"  # EAGAIN: the connect timed out (a closed port would have said ECONNREFUSED)
    rows = page.locator("#feed-rows tr", has_text="e2e-syn-flood")
    expect(rows).to_have_count(1, timeout=10_000)
    expect(rows.first).to_contain_text("SYN flood: 198.18.0.1 sent 200 TCP SYNs within 1 s")
    expect(rows.first).to_contain_text("dropped at XDP")
    page.screenshot(path=str(ARTIFACTS / "violations-flood.png"), full_page=True)
