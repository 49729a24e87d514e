"""monitor/kernel/batch.py reads maps by batch system calls, taking key and value sizes and
per-CPU values from the map itself: checked against maps of every kind the agent reads
(hash, per-CPU array, per-CPU hash, LRU hash), filled by bpftool, and against bpftool's
own dump of them."""

import contextlib
import os
import uuid

import pytest

from monitor.kernel import batch, bpftool
from monitor.kernel.layout import from_json_bytes, hex_bytes

pytestmark = pytest.mark.kernel


@pytest.fixture
def make_map():
    pins = []

    def make(kind: str, key: int, value: int, entries: int) -> str:
        pin = f"/sys/fs/bpf/crossedge-test-batch-{uuid.uuid4().hex[:8]}"
        bpftool.run("map", "create", pin, "type", kind, "key", str(key), "value", str(value), "entries",
                    str(entries), "name", "ce_test_batch", json_output=False)  # fmt: skip
        pins.append(pin)
        return pin

    yield make
    for pin in pins:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pin)


def fill(pin: str, items: dict[bytes, bytes]) -> None:
    bpftool.batch([bpftool.update_command(pin, hex_bytes(k), hex_bytes(v)) for k, v in items.items()])


def test_hash_map_read_whole_across_chunks_as_bpftool_dumps_it(make_map, monkeypatch):
    pin = make_map("hash", 12, 20, 10_000)
    items = {i.to_bytes(12, "little"): (i * 7).to_bytes(20, "little") for i in range(5_000)}
    fill(pin, items)
    monkeypatch.setattr(batch, "CHUNK", 1_000)  # several calls, each going on from the last one's token
    got = batch.dump(pin)
    assert len(got) == 5_000
    assert dict(got) == items
    assert dict(got) == {from_json_bytes(e["key"]): from_json_bytes(e["value"]) for e in bpftool.map_dump(pin)}


def test_per_cpu_array_summed_over_every_cpu(make_map):
    pin = make_map("percpu_array", 4, 8, 3)
    fill(pin, {(1).to_bytes(4, "little"): (5).to_bytes(8, "little")})  # bpftool writes it on every CPU
    cpus = batch.possible_cpus()
    assert cpus == len(bpftool.map_dump(pin)[0]["values"])
    assert batch.sums(pin) == [((0).to_bytes(4, "little"), 0), ((1).to_bytes(4, "little"), 5 * cpus),
                               ((2).to_bytes(4, "little"), 0)]  # fmt: skip


def test_per_cpu_hash_drained_empty_with_a_value_per_cpu(make_map):
    pin = make_map("percpu_hash", 8, 12, 64)  # 12 bytes: the kernel pads each CPU's value to 16
    fill(pin, {i.to_bytes(8, "little"): bytes([i]) * 12 for i in range(1, 40)})
    got = dict(batch.drain(pin))
    assert got == {i.to_bytes(8, "little"): [bytes([i]) * 12] * batch.possible_cpus() for i in range(1, 40)}
    assert batch.dump(pin) == [] and bpftool.map_dump(pin) == []


def test_lru_hash_and_an_empty_map(make_map):
    pin = make_map("lru_hash", 16, 16, 128)
    assert batch.dump(pin) == []
    fill(pin, {b"k" * 16: b"v" * 16})
    assert batch.dump(pin) == [(b"k" * 16, b"v" * 16)]


def test_a_missing_pin_is_a_clear_error():
    with pytest.raises(OSError, match="cannot open /sys/fs/bpf/crossedge-test-batch-none"):
        batch.dump("/sys/fs/bpf/crossedge-test-batch-none")
