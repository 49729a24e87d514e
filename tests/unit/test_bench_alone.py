"""bench/alone.py: a second bench refuses to start while one runs, and starts once it ended."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from bench.alone import alone; alone(); print('held', flush=True); sys.stdin.read()"


def bench(env, code="from bench.alone import alone; alone(); print('ran')", **popen):
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)  # fmt: skip


def test_a_second_bench_waits_for_the_first(tmp_path):
    env = {**os.environ, "CROSSEDGE_BENCH_LOCK": str(tmp_path / "bench.lock")}
    first = bench(env, HOLD, stdin=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "held\n"
        out, err = bench(env).communicate(timeout=30)
        assert out == ""
        assert "another bench is running (pid " in err and f"holding {tmp_path / 'bench.lock'}" in err
    finally:
        first.communicate(input="", timeout=30)  # the first ends: its lock goes with it
    out, err = bench(env).communicate(timeout=30)
    assert (out, err) == ("ran\n", "")
