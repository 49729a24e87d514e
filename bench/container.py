"""One container cgroup of the benchmark's own, with the product's programs attached above
it (on a pin root of its own), and a switch for single programs: what bench/dns.py and
bench/traffic.py measure in."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid

from monitor.kernel import bpftool
from monitor.kernel.enforcer import OBJECT, PROGRAMS, Enforcer
from monitor.testbed import SimulatedContainer


@contextlib.contextmanager
def programs_on_one_container(name: str, obj=OBJECT, dns_resolvers: tuple[str, ...] = ()):
    """(container, enforcer), started with the programs of `obj` (trusting `dns_resolvers`
    besides the host's); everything made is removed afterwards, even on failure."""
    tag = uuid.uuid4().hex[:8]
    parent = f"crossedge-bench-{tag}.slice"
    meta = tempfile.mkdtemp(prefix="crossedge-bench-")
    app = SimulatedContainer(name, parent, meta)
    pin_root = f"/sys/fs/bpf/crossedge-bench-{tag}"
    enforcer = Enforcer(
        obj=obj, pin_root=pin_root, scope=f"/{parent}/*", docker_roots=(meta,), dns_resolvers=dns_resolvers
    )
    try:
        app.create()
        enforcer.start()
        yield app, enforcer
    finally:
        enforcer.uninstall()
        app.remove()
        shutil.rmtree(meta, ignore_errors=True)


def set_attached(enforcer: Enforcer, name: str, on: bool) -> None:
    """Attach or detach one of the enforcer's cgroup programs where it attached them (the
    others stay)."""
    (target,) = enforcer.targets
    cgroup_dir = os.path.join(enforcer.cgroup_root, target.lstrip("/"))
    prog = enforcer.layout.prog(name)
    prog_id = bpftool.prog_show(prog)["id"]
    attached = any(p["id"] == prog_id for p in bpftool.cgroup_show(cgroup_dir))
    if on and not attached:
        bpftool.cgroup_attach(cgroup_dir, PROGRAMS[name][0], prog)
    elif not on and attached:
        bpftool.cgroup_detach(cgroup_dir, PROGRAMS[name][0], prog_id)


@contextlib.contextmanager
def program_stats():
    """kernel.bpf_stats_enabled on for the duration (restored after): every program's run
    time and run count, read with `program_times`."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as fh:
        before = fh.read().strip()
    with open(path, "w") as fh:
        fh.write("1")
    try:
        yield
    finally:
        with open(path, "w") as fh:
            fh.write(before)


def program_times(enforcer: Enforcer, names=tuple(PROGRAMS)) -> dict[str, tuple[int, int]]:
    """The enforcer's programs: name -> (run time ns, runs) so far (with program_stats on)."""
    return {
        name: (info.get("run_time_ns", 0), info.get("run_cnt", 0))
        for name in names
        for info in [bpftool.prog_show(enforcer.layout.prog(name))]
    }
