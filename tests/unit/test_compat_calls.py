"""Whether a node's kernel takes 32-bit system calls (then, under an open deny, the agent
attaches the program that refuses them), read from a /proc of the test's making."""

import pytest

from monitor.kernel.enforcer import runs_32_bit_calls


def proc(tmp_path, cmdline, vsyscall32=True):
    (tmp_path / "sys" / "abi").mkdir(parents=True)
    if vsyscall32:
        (tmp_path / "sys" / "abi" / "vsyscall32").write_text("1\n")
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("cmdline", "vsyscall32", "expected"),
    [
        ("console=ttyS0 quiet", True, True),  # built in, not turned off
        ("quiet ia32_emulation=0", True, False),
        ("ia32_emulation=off quiet", True, False),
        ("ia32_emulation=true", True, True),  # (a kernel off by default, turned on)
        ("quiet", False, False),  # built without IA32 emulation (or not x86-64)
        ("quiet -- ia32_emulation=0", True, True),  # after "--": init's arguments, not the kernel's
    ],
)
def test_32_bit_calls_are_read_from_the_kernel_and_its_command_line(tmp_path, cmdline, vsyscall32, expected):
    assert runs_32_bit_calls(proc(tmp_path, cmdline, vsyscall32)) is expected
