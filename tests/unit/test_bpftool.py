"""bpftool's answers: output it cannot parse is an error, never an empty answer."""

import pytest

from monitor.kernel import bpftool


@pytest.fixture
def fake_bpftool(tmp_path, monkeypatch):
    def install(stdout: str, status: int = 0):
        exe = tmp_path / "bpftool"
        exe.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nexit {status}\n")
        exe.chmod(0o755)
        monkeypatch.setattr(bpftool, "executable", lambda: str(exe))

    return install


def test_unreadable_json_is_an_error_not_an_empty_map(fake_bpftool):
    fake_bpftool('[{"key": ["0x01"], "val')  # cut off mid-answer
    with pytest.raises(bpftool.BpftoolError, match="unreadable JSON"):
        bpftool.map_dump("/sys/fs/bpf/x")


def test_readable_answers_and_failures(fake_bpftool):
    fake_bpftool('[{"key": ["0x01"]}]')
    assert bpftool.map_dump("/sys/fs/bpf/x") == [{"key": ["0x01"]}]
    fake_bpftool('{"error": "bpf obj get (/sys/fs/bpf/x): No such file or directory"}', status=255)
    with pytest.raises(bpftool.NotFound):
        bpftool.map_dump("/sys/fs/bpf/x")
