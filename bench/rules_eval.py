"""Rule evaluation in the agent: events per second against 10 rules and 10,000 rules.

    .venv/bin/python -m bench.rules_eval [--rounds 9] [--events 100000]

Both rule sets are the shape a real policy has (deny /32s, alert /24s, port rules, a few
container-scoped rules, an allow-all-loopback at the end), the events are distinct flows
(random loopback addresses, ports and containers, parsed from text as the agent does),
and the two arms are measured in alternating order each round; medians are compared.

Targets (issue 6): >= 100,000 events/s with 10,000 rules, and no more than 2x slower than
with 10 rules.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from monitor.rules import Flow, RuleSet

from .alone import alone

TARGET_RATE = 100_000
TARGET_RATIO = 0.5


def policy(n: int, rng: random.Random) -> RuleSet:
    specs = []
    for i in range(n - 1):
        kind = i % 10
        if kind < 6:
            match = {"dest_ip": f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}/32"}
            action = "deny"
        elif kind < 8:
            match = {"dest_ip": f"127.{rng.randrange(256)}.{rng.randrange(256)}.0/24", "dest_port": 443}
            action = "alert"
        elif kind == 8:
            match = {"dest_port": 1024 + i % 50000}
            action = "alert"
        else:
            match = {"container": f"app-{i % 200}", "dest_port": "5000-5100"}
            action = "deny"
        specs.append({"id": f"r{i}", "priority": 100, "match": match, "action": action})
    specs.append({"id": "loopback", "priority": 1000, "match": {"dest_ip": "127.0.0.0/8"}, "action": "allow"})
    return RuleSet.from_specs(specs, 1)


def events(count: int, rng: random.Random) -> list[tuple]:
    return [
        (f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.choice([80, 443, 3306, 5050]),
         rng.randrange(1000, 1200), f"app-{rng.randrange(200)}")
        for _ in range(count)
    ]  # fmt: skip


def run(ruleset: RuleSet, batch: list[tuple]) -> float:
    start = time.perf_counter()
    for ip, port, cgid, container in batch:
        ruleset.evaluate(Flow.of(ip, port, cgroup_id=cgid, container=container))
    return len(batch) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    rng = random.Random(11)
    arms = {"10 rules": policy(10, rng), "10,000 rules": policy(10_000, rng)}
    batch = events(args.events, rng)
    for ruleset in arms.values():  # same answers as the plain first-match scan, on a sample
        for ip, port, cgid, container in batch[:2000]:
            flow = Flow.of(ip, port, cgroup_id=cgid, container=container)
            assert ruleset.evaluate(flow) is ruleset.evaluate_linear(flow)
    rates = {name: [] for name in arms}
    names = list(arms)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(run(arms[name], batch))
    small, large = (statistics.median(rates[n]) for n in names)
    print(f"rule evaluation, {args.events:,} distinct-flow events x {args.rounds} interleaved rounds, medians:")
    print(f"{'arm':<14}{'events/s':>12}{'ratio':>8}")
    print(f"{names[0]:<14}{small:>12,.0f}{1:>8.3f}")
    print(f"{names[1]:<14}{large:>12,.0f}{large / small:>8.3f}")
    ok = large >= TARGET_RATE and large / small >= TARGET_RATIO
    print(f"\n10,000 rules: {large:,.0f} events/s (target >= {TARGET_RATE:,}), {large / small:.2f} of 10 rules "
          f"(target >= {TARGET_RATIO}): {'meets' if ok else 'MISSES'} both targets")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    alone()
    sys.exit(main())
