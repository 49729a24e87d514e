"""Traffic minutes: readings summed per minute and flow, and a container's flows past
MAX_FLOWS in a minute summed into its "other" row, so a scan is a bounded number of rows
with every byte still counted."""

from monitor.traffic import MINUTE_NS, TrafficMinutes


def flow(cgroup, port):
    return (cgroup, 4, 6, 40000 + port, "127.0.0.9", port)


def test_readings_sum_per_minute_and_a_scans_flows_past_the_cap_fold_into_other():
    minutes = TrafficMinutes(max_flows=3)
    now = 100 * MINUTE_NS
    minutes.add([(flow(1, p), (100, 60, 0, 0, 2, 1)) for p in range(10)] + [(flow(2, 1), (5, 5, 5, 5, 1, 1))], now)
    minutes.add([(flow(1, 0), (1, 1, 1, 1, 1, 1)), (flow(1, 9), (1, 0, 0, 0, 1, 0))], now + 1)
    assert minutes.due(now + 2) == []  # the minute is not over
    rows = {f: c for _m, f, c in minutes.due(now + MINUTE_NS)}
    other = (1, 4, 0, 0, "0.0.0.0", 0)
    assert set(rows) == {flow(1, 0), flow(1, 1), flow(1, 2), other, flow(2, 1)}
    assert rows[flow(1, 0)]["bytes_in"] == 101
    assert rows[other]["bytes_in"] == 7 * 100 + 1 and rows[other]["packets_in"] == 7 * 2 + 1
    assert sum(c["bytes_in"] for f, c in rows.items() if f[0] == 1) == 1000 + 2  # every byte, once
    assert minutes.totals["flows_folded"] == 8 and minutes.pending == {} and not minutes.flows
