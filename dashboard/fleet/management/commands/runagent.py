"""`manage.py runagent`: the node agent.

With --token it is a remote node of the dashboard at --server. Without one it enrols
itself as a node of this machine's dashboard (it shares the database), which is what
`make run` does; the traffic still goes over the agent protocol like any node's.
With --policy FILE it runs alone: rules from the file, events printed as JSON lines.

Deny rules are enforced in the kernel (cgroup connect4/connect6 programs for the
container cgroups matching --enforce-scope) unless --no-enforce. The same programs observe
every connect() of those containers, which costs them about 1% of connect() throughput;
--trace-syscalls adds connect.bt (bpftrace on the connect syscall tracepoints) for host
processes and connect() results, at about 10%. Without enforcement, connect.bt is the
source. The programs stay pinned and enforcing when the agent stops; `--uninstall`
removes them.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.fleet.models import Node
from dashboard.policy import policyfile
from monitor import features, resolvers
from monitor.agent import Agent
from monitor.backends import BACKENDS
from monitor.files import WatchError, parse_watches
from monitor.kernel import bpftool
from monitor.kernel.compile import SUMMARISE
from monitor.kernel.enforcer import Enforcer
from monitor.protocol import AGENT_PATH
from monitor.rules import MAX_LIMIT
from monitor.spool import DEFAULT_CAP, Spool
from monitor.uplink import Refused, Uplink


class Command(BaseCommand):
    help = "Run the CrossEdge node agent (needs root): trace connections, judge them, deny in the kernel, report."

    def add_arguments(self, parser):
        parser.add_argument(
            "--server",
            default=os.environ.get("CROSSEDGE_SERVER", "ws://127.0.0.1:8000"),
            help="dashboard base URL (env CROSSEDGE_SERVER; default ws://127.0.0.1:8000)",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("CROSSEDGE_NODE_TOKEN"),
            help="node token from the admin (env CROSSEDGE_NODE_TOKEN); omit to enrol as this machine's local node",
        )
        parser.add_argument("--node", default=socket.gethostname(), help="node name when enrolling locally")
        parser.add_argument(
            "--docker-root",
            action="append",
            dest="docker_roots",
            help="where Docker keeps container metadata, for names, images and labels (repeatable; "
            "env CROSSEDGE_DOCKER_ROOTS)",
        )
        parser.add_argument(
            "--podman-root",
            action="append",
            dest="podman_roots",
            help="Podman's storage root, for names and images (repeatable; env CROSSEDGE_PODMAN_ROOTS; "
            "default /var/lib/containers/storage)",
        )
        parser.add_argument(
            "--spool",
            default=os.environ.get("CROSSEDGE_SPOOL"),
            metavar="FILE",
            help="where events wait for the dashboard's ack (SQLite; env CROSSEDGE_SPOOL; "
            "default <var dir>/spool-<node>.db)",
        )
        parser.add_argument(
            "--spool-cap",
            type=int,
            default=int(os.environ.get("CROSSEDGE_SPOOL_CAP", DEFAULT_CAP)),
            help=f"events kept while the dashboard is unreachable; past it the oldest are dropped and counted "
            f"(default {DEFAULT_CAP:,})",
        )
        parser.add_argument("--policy", metavar="FILE", help="run without a dashboard: rules from this YAML file")
        parser.add_argument(
            "--enforce-scope",
            default=settings.ENFORCE_SCOPE,
            metavar="GLOB",
            help="container cgroup paths the kernel programs observe and enforce on (env CROSSEDGE_ENFORCE_SCOPE; "
            "default *)",
        )
        parser.add_argument(
            "--monitor-scope",
            default=os.environ.get("CROSSEDGE_MONITOR_SCOPE", "*"),
            metavar="GLOB",
            help="report only processes whose cgroup path matches (env CROSSEDGE_MONITOR_SCOPE; default *: all)",
        )
        parser.add_argument(
            "--no-enforce",
            action="store_true",
            help="report deny rules only; load no programs (connections are traced with bpftrace instead)",
        )
        parser.add_argument(
            "--trace-syscalls",
            action="store_true",
            default=os.environ.get("CROSSEDGE_TRACE_SYSCALLS", "") not in ("", "0"),
            help="also trace connect() syscalls with bpftrace: host processes and connect() results, "
            "at about 10%% of connect() throughput (env CROSSEDGE_TRACE_SYSCALLS=1)",
        )
        parser.add_argument(
            "--file-watch",
            default=os.environ.get("CROSSEDGE_FILE_WATCH"),
            help="paths whose opens are reported besides those file rules name: whitespace-separated "
            "glob[:access,...] (access: read, write, create, truncate), '-' for none (env CROSSEDGE_FILE_WATCH; "
            "default: credential files, SSH keys, /etc writes, runtime sockets, /proc/*/mem, binary dir writes)",
        )
        parser.add_argument(
            "--no-files",
            action="store_true",
            default=os.environ.get("CROSSEDGE_FILES", "1") in ("0", "no", "off"),
            help="attach no open() programs: no file events or file rules, and opens cost nothing "
            "(env CROSSEDGE_FILES=0; see BENCHMARKS.md for what they cost)",
        )
        parser.add_argument(
            "--io-uring",
            choices=("refuse", "allow"),
            default=os.environ.get("CROSSEDGE_IO_URING", "refuse"),
            help="io_uring_setup() in a container an open deny applies to: refuse (the caller is killed: io_uring's "
            "opens never reach the open programs) or allow (env CROSSEDGE_IO_URING; default refuse)",
        )
        parser.add_argument(
            "--compat-syscalls",
            choices=("refuse", "allow"),
            default=os.environ.get("CROSSEDGE_COMPAT_SYSCALLS", "refuse"),
            help="32-bit (int 0x80) and x32 system calls in a container an open deny applies to: refuse (the caller "
            "is killed: no syscall tracepoint sees them; costs every system call of the node while an open deny is "
            "in force, see BENCHMARKS.md) or allow, e.g. on a kernel booted with ia32_emulation=0 "
            "(env CROSSEDGE_COMPAT_SYSCALLS; default refuse)",
        )
        parser.add_argument(
            "--dns-resolver",
            action="append",
            default=os.environ.get("CROSSEDGE_DNS_RESOLVERS", "").split(),
            metavar="ADDR",
            help="a DNS resolver whose answers teach the kernel names, besides the host's resolv.conf nameservers "
            "and Docker's 127.0.0.11: only an answer from one of these to a query the container's socket sent is "
            "learned, and a container sending as one is dropped; repeatable (env CROSSEDGE_DNS_RESOLVERS, "
            "whitespace-separated)",
        )
        parser.add_argument(
            "--xdp-iface",
            action="append",
            default=os.environ.get("CROSSEDGE_XDP_IFACES", "").split(),
            metavar="DEV",
            help="an interface for the ingress blocklist (rules with match.source_ip), at XDP: native where the "
            "driver has it, generic otherwise; NETNS/DEV for a device in a named network namespace; repeatable "
            "(env CROSSEDGE_XDP_IFACES, whitespace-separated; default none)",
        )
        parser.add_argument(
            "--scan-summary",
            type=_scan_summary,
            default=os.environ.get("CROSSEDGE_SCAN_SUMMARY", str(SUMMARISE)),
            metavar="N",
            help="new destinations per second from which a container is scanning: its calls to new destinations "
            f"are summed in the kernel, one row per second (env CROSSEDGE_SCAN_SUMMARY; default {SUMMARISE})",
        )
        parser.add_argument(
            "--pin-root",
            default=settings.PIN_ROOT,
            help="bpffs directory for the pinned programs and maps (env CROSSEDGE_PIN_ROOT)",
        )
        parser.add_argument(
            "--uninstall", action="store_true", help="detach and unpin the enforcement programs, then exit"
        )
        parser.add_argument(
            "--status", action="store_true", help="print what the kernel enforces (JSON: attachments, counters)"
        )

    def handle(self, *args, **opts):
        logging.getLogger("crossedge").setLevel(logging.INFO)
        if os.geteuid() != 0:
            raise CommandError(
                "the agent must run as root (it loads eBPF programs: CAP_BPF, CAP_PERFMON, "
                "CAP_SYS_ADMIN); try: sudo python manage.py runagent"
            )
        enforcer = None
        for opt, env in (("io_uring", "CROSSEDGE_IO_URING"), ("compat_syscalls", "CROSSEDGE_COMPAT_SYSCALLS")):
            if opts[opt] not in ("refuse", "allow"):  # (argparse checks a choice given, not the env's)
                raise CommandError(f"{env}={opts[opt]!r}: use refuse or allow")
        try:
            watches = parse_watches(opts["file_watch"])
            dns_resolvers = resolvers.parse(opts["dns_resolver"])
        except (WatchError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if opts["uninstall"] or opts["status"] or not opts["no_enforce"]:
            enforcer = Enforcer(
                pin_root=opts["pin_root"],
                scope=opts["enforce_scope"],
                watches=watches,
                files=not opts["no_files"],
                xdp_ifaces=tuple(opts["xdp_iface"]),
                scan_summary=opts["scan_summary"],
                io_uring=opts["io_uring"] == "refuse",
                compat=opts["compat_syscalls"] == "refuse",
                dns_resolvers=dns_resolvers,
                guard_state=str(settings.VAR_DIR / "immutable.json"),  # node-wide: what to clear when rules go
            )
        if opts["status"]:
            try:
                self.stdout.write(json.dumps(enforcer.status(), indent=2))
            except bpftool.BpftoolError as exc:
                raise CommandError(f"cannot read the kernel state: {exc}") from None
            return
        if opts["uninstall"]:
            try:
                done = enforcer.uninstall()
            except bpftool.BpftoolError as exc:
                raise CommandError(f"uninstall failed: {exc}") from None
            self.stdout.write(
                f"detached {done['detached']} program(s), removed {len(done['generations'])} pinned generation(s)"
            )
            return
        report = features.probe()
        degraded = []
        if enforcer and (missing := features.missing_for_enforcement(report)):
            degraded.append(
                f"no kernel enforcement and no in-kernel observation of containers (deny rules only reported, "
                f"connections traced with bpftrace): missing {', '.join(missing)}"
            )
            enforcer = None
        backends = ("connect",) if opts["trace_syscalls"] or not enforcer else ()  # else the programs observe
        if backends and (missing := features.missing_for_tracing(report)):
            degraded.append(f"no syscall tracing: missing {', '.join(missing)} ({BACKENDS['connect'].install_hint})")
            backends = ()
        for reason in degraded:
            self.stderr.write(f"degraded: {reason}")
        if not backends and not enforcer:
            raise CommandError("this kernel offers neither connection tracing nor enforcement: " + "; ".join(degraded))
        roots = tuple(opts["docker_roots"] or settings.DOCKER_ROOTS)
        podman_roots = tuple(opts["podman_roots"] or settings.PODMAN_ROOTS)
        if enforcer:
            enforcer.docker_roots, enforcer.podman_roots = roots, podman_roots
        agent = Agent(
            backends,
            docker_roots=roots,
            podman_roots=podman_roots,
            enforcer=enforcer,
            monitor_scope=opts["monitor_scope"],
            features=report,
            degraded=degraded,
        )
        uplink = None
        if opts["policy"]:
            job = self.standalone(agent, self.read_policy(opts["policy"]))
        else:
            token = opts["token"] or self.enrol_local(opts["node"])
            url = opts["server"].rstrip("/") + AGENT_PATH
            spool_path = opts["spool"] or str(settings.VAR_DIR / f"spool-{opts['node']}.db")
            os.makedirs(os.path.dirname(os.path.abspath(spool_path)), exist_ok=True)
            agent.kernel_state = f"{spool_path}.kernel-flows.json"  # counts reported, kept with the spool
            uplink = Uplink(agent, url, token, spool=Spool(spool_path, cap=opts["spool_cap"]))
            self.stdout.write(f"agent sending to {url} (spool {spool_path}, {uplink.spool.depth} events waiting)")
            job = uplink.run()
        try:
            asyncio.run(self.run(agent, job))
        except Refused as exc:
            raise CommandError(str(exc)) from None
        finally:
            if uplink:
                uplink.flush_outbox()  # what the tracers printed while stopping
                uplink.spool.close()

    def read_policy(self, path: str) -> list[dict]:
        try:
            with open(path, "rb") as fh:
                rules = policyfile.loads(fh.read(), source=path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        except policyfile.PolicyFileError as exc:
            raise CommandError(str(exc)) from None
        return [r.to_spec() for r in rules]

    def enrol_local(self, name: str) -> str:
        """This machine's node, with a fresh token; a revoked node stays revoked."""
        node = Node.objects.filter(name=name).first() or Node(name=name)
        if node.revoked:
            raise CommandError(
                f"node {name!r} is revoked: an admin must lift that (admin → Nodes) before this machine's agent runs"
            )
        token = node.issue_token()
        node.save()
        self.stdout.write(f"enrolled this machine as node {name!r}")
        return token

    async def standalone(self, agent: Agent, specs: list[dict]) -> None:
        """No dashboard: the file is the policy, stdout is the feed."""
        agent.set_policy(1, specs)
        while True:
            await agent.wakeup.wait()
            agent.wakeup.clear()
            while agent.outbox:
                sys.stdout.write(json.dumps(agent.outbox.popleft()) + "\n")
            sys.stdout.flush()

    async def run(self, agent: Agent, job) -> None:
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)
        try:
            await agent.run(job)
        except asyncio.CancelledError:
            self.stdout.write("agent stopped (enforcement stays in the kernel; --uninstall removes it)")


def _scan_summary(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return value
