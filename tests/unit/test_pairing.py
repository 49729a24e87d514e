"""Kernel denies and traced connects meet in either order and become one event."""

from monitor.pairing import Pairing


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def connect(pid=7, ip="127.10.10.5", port=443, **kw):
    return {"pid": pid, "dest_ip": ip, "dest_port": port, "verdict": "deny", "rule_id": "user", "result": -1} | kw


def deny(pid=7, ip="127.10.10.5", port=443, audit=False):
    return {"pid": pid, "dest_ip": ip, "dest_port": port, "rule_id": "kernel-rule", "audit": audit, "severity": "high"}


def test_pairs_in_either_order():
    p = Pairing()
    assert p.connect(connect()) == []
    [merged] = p.deny(deny())
    assert (merged["rule_id"], merged["enforced"], merged["audit"], merged["result"]) == (
        "kernel-rule",
        True,
        False,
        -1,
    )
    assert p.deny(deny(audit=True)) == []
    [merged] = p.connect(connect(result=0))
    assert (merged["enforced"], merged["audit"]) == (False, True)
    assert len(p) == 0 and p.paired == 2


def test_v4_mapped_connect_meets_its_ipv4_deny():
    p = Pairing()
    p.connect(connect(ip="::ffff:127.10.10.5"))
    assert len(p.deny(deny())) == 1


def test_retries_pair_one_to_one_and_leftovers_expire_in_order():
    clock = Clock()
    p = Pairing(window=1.0, clock=clock)
    p.connect(connect(seq_hint=1))
    p.connect(connect(seq_hint=2))
    [first] = p.deny(deny())
    assert first["seq_hint"] == 1
    p.deny(deny(pid=8))
    clock.now += 0.5
    assert p.expire() == ([], [])
    clock.now += 0.6
    connects, denies = p.expire()
    assert [c["seq_hint"] for c in connects] == [2] and [d["pid"] for d in denies] == [8]
    assert len(p) == 0


def test_force_flushes_everything():
    p = Pairing()
    p.connect(connect())
    p.deny(deny(pid=9))
    connects, denies = p.expire(force=True)
    assert len(connects) == len(denies) == 1 and len(p) == 0
