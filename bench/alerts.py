"""Alert latency: from a container's connect() to a webhook receiver, while events flow.

    sudo .venv/bin/python -m bench.alerts [--seconds 10] [--rates 100,1000] [--rounds 3] [--json FILE]

Runs the product as `make run` does (daphne, the local agent, `manage.py alerts`; SQLite) in
a temporary directory, with one webhook output (CROSSEDGE_ALERTS, dedupe 0 s: every
violation is its own notification, the hardest case) to a receiver of the bench on
loopback, and a rule that alerts on 1 destination port in 10 (20000-20004 of the load's
20000-20049). Each step is a fresh container cgroup of ours making paced connects, every
call a new flow (closed loopback ports: a row per call through agent, uplink, database;
the agent's scan summing is set out of reach, CROSSEDGE_SCAN_SUMMARY, so none is summed).
The arms (connect rates) are interleaved round by round. Per arm, medians over rounds:

  events/s    connects made per second (all stored, each its own row)
  alerts      violations the load made (calls to the alerted ports) and those received
  p50/p99     from each alerted call's own time (the load stamps each call) to the
              webhook's receipt of its notification (target: p99 <= 2 s at 1,000 events/s)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from monitor.rules import MAX_LIMIT
from monitor.testbed import SimulatedContainer
from tests.receivers import Webhook

from .alone import alone
from .loopback import start_listener
from .pipeline import Product, load, percentile

ALERTED = range(20000, 20005)
POLICY = """rules:
  - id: bench-alert
    description: the bench's alerted ports
    match: {dest_port: "20000-20004"}
    action: alert
    severity: high
"""


def outputs_file(tmp: Path, url: str) -> Path:
    path = tmp / "alerts.yaml"
    path.write_text(f"outputs:\n  - name: bench-hook\n    kind: webhook\n    target: {url}\n    dedupe_seconds: 0\n")
    return path


def step(product: Product, hook: Webhook, container: SimulatedContainer, port: int, rate: float, seconds: float):
    """One load; wait for its alerts; latencies of every alerted call."""
    clock = time.time() - time.monotonic()  # the receiver stamps monotonic time, the load wall time
    already = len(hook.received)
    result = load(container, port, rate, seconds, 1 if rate <= 5000 else 2, flows=0)
    calls = {flow: times[0] for flow, times in result.calls.items() if flow[1] in ALERTED}
    deadline, last = time.monotonic() + 120, (0, time.monotonic())
    while time.monotonic() < deadline:  # until every alert came, or none for 10 s
        got = sum(1 for _, _, b in hook.received[already:] if b["crossedge"]["container_name"] == container.name)
        if got >= len(calls) or (got == last[0] and time.monotonic() - last[1] > 10):
            break
        if got != last[0]:
            last = (got, time.monotonic())
        time.sleep(0.2)
    latencies = []
    for arrived, _, body in hook.received[already:]:
        alert = body["crossedge"]
        if alert["container_name"] == container.name and (alert["dest_ip"], alert["dest_port"]) in calls:
            latencies.append(arrived + clock - calls.pop((alert["dest_ip"], alert["dest_port"])))
    return {
        "events_per_s": round(result.generated / result.took),
        "alerted": len(latencies) + len(calls),
        "received": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000),
        "p99_ms": round(percentile(latencies, 0.99) * 1000),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per step")
    parser.add_argument("--rates", default="100,1000", help="connects/s per arm, comma separated")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every arm once, interleaved")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it runs the agent and makes cgroups")
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="crossedge-bench-alerts-"))
    parent = f"crossedge-bench-{uuid.uuid4().hex[:8]}.slice"
    target, port = start_listener()
    hook = Webhook().start()
    product = Product(tmp, parent)
    product.env["CROSSEDGE_ALERTS"] = str(outputs_file(tmp, hook.url))
    product.env["CROSSEDGE_SCAN_SUMMARY"] = str(MAX_LIMIT)  # every call its own row and violation, never summed
    made: list[SimulatedContainer] = []
    results: dict[float, list[dict]] = {rate: [] for rate in rates}
    try:
        product.prepare()
        (tmp / "policy.yaml").write_text(POLICY)
        product.manage("policy", "import", str(tmp / "policy.yaml"))
        # The containers' parent exists before the agent starts, as /system.slice does on a host.
        made = [SimulatedContainer(f"bench-alerts-{i}", parent, str(tmp / "docker")).create()
                for i in range(args.rounds * len(rates))]  # fmt: skip
        product.start()
        for round_ in range(args.rounds):
            for rate in rates if round_ % 2 == 0 else reversed(rates):
                container = made[sum(map(len, results.values()))]
                results[rate].append(step(product, hook, container, port, rate, args.seconds))
                print(f"round {round_ + 1}, {rate:g}/s: {results[rate][-1]}", file=sys.stderr)
    finally:
        product.stop()
        for c in made:
            c.remove()
        hook.stop()
        target.kill()
        target.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nalert latency, connect() -> webhook receipt (dedupe 0 s: every violation sent; medians over rounds)")
    columns = ["rate", "events_per_s", "alerted", "received", "p50_ms", "p99_ms"]
    print("".join(f"{c:>14}" for c in columns))
    summary = {}
    for rate, rows in results.items():
        row = {"rate": int(rate)} | {c: statistics.median(r[c] for r in rows) for c in columns[1:]}
        summary[int(rate)] = row
        print("".join(f"{row[c]:>14}" for c in columns))
    worst = max(summary.values(), key=lambda r: r["rate"])
    print(f"\np99 at {worst['events_per_s']:,.0f} events/s: {worst['p99_ms'] / 1000:.2f} s (target <= 2 s)")
    missing = [rate for rate, rows in results.items() for r in rows if r["received"] < r["alerted"]]
    if missing:
        print(f"NOT every alert was received (arms {sorted(set(missing))}): the latency figures stand for part of them")
    if args.json:
        Path(args.json).write_text(json.dumps({"arms": summary, "rounds": results}, indent=2))
    return 1 if missing else 0


if __name__ == "__main__":
    alone()
    sys.exit(main())
