"""The node agent's pipeline: backend event -> attribution -> verdict -> outbox.

Plain Python: the dashboard is reached only through an uplink that drains `outbox`
and feeds `set_policy`, so the same agent runs against a remote dashboard, the local
one, a policy file, or a test.

Connections come from two sources. With an Enforcer, its connect4/6 and sendmsg4/6 programs
observe every connect() (and every addressed UDP datagram) of the containers below their
attach points and decide deny rules there: each call arrives already judged (`kernel`
events), or counted with its flow (KernelFlows). The kernel classifies a new container
when its cgroup is made and holds its first exec until the agent has listed it (`holds`). This
costs the containers a few per cent of connect() throughput, where a syscall tracepoint
costs 11 to 23% (BENCHMARKS.md). connect.bt (bpftrace) is the source without an Enforcer, and
with one only when asked for (`trace_syscalls`: host processes and connect() results);
its calls from cgroups the programs observe are then left to the programs.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import signal
import socket
import time

from . import AGENT_VERSION, folding
from .backends import BACKENDS, perf_pipe
from .cgroups import CgroupIndex
from .containers import DEFAULT_DOCKER_ROOT, DEFAULT_PODMAN_ROOT, identify
from .dns import FORGED, Names, RefusedAnswers, refused_reason
from .files import watched
from .flowcounts import FlowCounts, KernelFlows
from .guard import AT_FDCWD, refused_file
from .hashing import hash_file
from .kernel import processes as kernel_processes
from .kernel.bpftool import BpftoolError
from .kernel.enforcer import Enforcer, EnforcerError
from .kernel.layout import WRITE_CALLS
from .limits import LimitReports
from .parsers import perf_lines
from .processes import CALLS, ProcessTable, ProcGroups, judge, socket_text, state
from .rules import Flow, RuleError, RuleSet, glob_match
from .scans import ScanSums
from .supervisor import Supervisor
from .traffic import PROTOCOLS, TrafficMinutes

log = logging.getLogger("crossedge.agent")


DEFAULT_OUTBOX_CAP = 200_000
KERNEL = "kernel"  # the backend name (and event kind) of the programs' events
LIFECYCLE = "lifecycle"  # the programs' container lifecycle records
PROCS = "procs"  # the programs' process exec and exit records
DNS = "dns"  # the DNS answers the containers received
NAME_WAIT = 1.0  # seconds a call waits for the answer that named its destination (another pipe)
DNS_WATERMARK = 4096  # bytes of answers buffered per CPU before the reader wakes (or 100 ms): a storm in batches
TRAFFIC_POLL = 10.0  # seconds between drains of the packet programs' traffic table
FINAL_READS = 15.0  # seconds a stopping agent waits for its last reads of the kernel's counts
MAX_HOLD = 5.0  # seconds a held exec waits for the agent before it goes on unjudged (a loaded node took >2)
EPERM = -1
MAX_PATH = 1024  # the dashboard's cgroup_path length (dashboard/events/schema.py)
KERNEL_POLL = 1.0  # seconds between cgroup rescans (new containers get enforcement)
FLOW_POLL = 1.0  # seconds between reads of the programs' flow counters
COUNTER_POLL = 2.0
START_RETRY = 30.0
SYNC_RETRY, SYNC_RETRY_MAX = 1.0, 30.0  # seconds before a failed policy write is tried again (doubling)


class Agent:
    def __init__(
        self,
        backends=("connect",),
        *,
        cgroups: CgroupIndex | None = None,
        docker_roots: tuple[str, ...] = (DEFAULT_DOCKER_ROOT,),
        podman_roots: tuple[str, ...] = (DEFAULT_PODMAN_ROOT,),
        outbox_cap: int = DEFAULT_OUTBOX_CAP,
        enforcer: Enforcer | None = None,
        monitor_scope: str = "*",
        features: dict | None = None,
        degraded: list[str] | None = None,
        aggregate_above: int = folding.THRESHOLD,
        kernel_state: str | None = None,
    ):
        self.cgroups = cgroups or CgroupIndex()
        self.monitor_scope = monitor_scope or "*"
        self.features = features or {}
        self.degraded = list(degraded or [])  # what this node does without, and why
        self.out_of_scope = 0
        self.docker_roots = tuple(docker_roots)
        self.podman_roots = tuple(podman_roots)
        self.ruleset = RuleSet()
        self.policy_received = False  # until then an adopted kernel policy is left as it is
        self.policy_error = ""
        self.outbox: collections.deque[dict] = collections.deque()
        self.outbox_cap = outbox_cap
        self.outbox_dropped = 0
        self.verdicts = collections.Counter()
        self.wakeup = asyncio.Event()
        self.flows = FlowCounts()
        self.kernel_flows = KernelFlows()
        self.kernel_state = kernel_state  # where the reported flow counts are kept across restarts
        self.covered = 0  # tracer calls left to the programs, which observed them too
        self.supervisors = [
            Supervisor(BACKENDS[name], self.handle, on_map=self.handle_counts, on_start=self._tracer_started)
            for name in backends
        ]
        self.started = time.time()
        self._started_mono = time.monotonic()
        self.enforcer = enforcer
        self.kernel_error = ""
        self.kernel_lost = 0  # calls the programs could neither send nor count
        self.kernel_counters: dict[str, int] = {}
        self.kernel_ready = asyncio.Event()  # programs attached and the first policy written
        self.kernel_observing = asyncio.Event()  # programs attached and their events read
        self.kernel_reporting = False  # from here on the programs' counts are ours to report
        self._kernel_wakeup = asyncio.Event()  # a new policy, or a container to list now
        self._fold_wakeup = asyncio.Event()  # a folded count or a call waiting for its name
        self.folder = folding.StormFolder(aggregate_above)  # back-pressure (monitor.folding)
        self.pending: dict[int, float] = {}  # container cgroups the kernel holds execs in -> since
        self.held: dict[int, set[int]] = {}  # ... and the processes it stopped there
        self.holds = collections.Counter()  # held, released, expired (went on unjudged)
        self.hold_ms_max = 0.0
        self.list_ms_max = 0.0
        self.unenforced = collections.Counter()  # deny verdicts the kernel did not apply, by reason
        self.processes = ProcessTable()
        self.proc_groups = ProcGroups()  # like records the programs counted instead of sending
        self.held_execs: set[int] = set()  # held processes whose exec record has been judged
        self.proc_counts = collections.Counter()  # exec, exit, killed (by the kernel or at a hold)
        self.proc_lost = (0,) * len(kernel_processes.LOST)  # records the process programs could not send
        self.exec_counts: dict[int, int] = {}  # cgroup id -> execs (counted in the kernel)
        self.names = Names()  # what the containers resolved (monitor.dns)
        self.unnamed: collections.deque[tuple[float, dict]] = collections.deque()  # calls awaiting their name
        self.dns_stats: dict[str, int] = {}  # the DNS program's counts
        self.refused_answers = RefusedAnswers()  # DNS answers the kernel learned nothing from
        self.traffic = TrafficMinutes()  # what the packet programs counted, per minute and flow
        self.traffic_lost = 0  # bytes the packet programs could count nowhere
        self.scan_sums = ScanSums()  # the calls the programs summed in scans
        self.limit_reports = LimitReports()  # what the rate limits held back
        self.kernel_reports = collections.Counter()  # scans and floods raised, calls summed, limit reports
        self._sync_retry_at, self._sync_backoff = 0.0, SYNC_RETRY
        self._tasks: set[asyncio.Task] = set()  # hashing a held exec's file

    # -- events ---------------------------------------------------------------
    def handle(self, backend: str, event: dict) -> None:
        """Attribute and judge one parsed event, then queue it for the uplink."""
        if backend == KERNEL and event.get("op") == "flood":
            self._flood(event)
            return
        if backend == KERNEL and not self._named(event):
            self.unnamed.append((time.monotonic() + NAME_WAIT, event))  # its answer is on the dns pipe
            self._fold_wakeup.set()
            return
        if backend == KERNEL and "folded" in event:
            if grown := self.kernel_flows.sent(event):
                event["count"] = 1 + grown  # this call, and those its flow counted since the last
        event["kind"] = backend
        event["ts_ns"] = event.pop("mono_ns") + time.time_ns() - time.monotonic_ns()
        path = self.cgroups.path(event["cgroup_id"])
        if self.monitor_scope != "*" and not glob_match(path or "", self.monitor_scope):
            self.out_of_scope += event.get("count", 1)  # another node's (agents sharing a test host): not lost
        elif backend != KERNEL and self.kernel_reporting and self.enforcer.observes(path):  # theirs to report
            self.covered += event.get("count", 1)
        else:
            if backend == KERNEL and event["cgroup_id"] not in self.enforcer.scope_ids and self.enforcer.in_scope(path):
                self._kernel_wakeup.set()  # a new container, observed but not yet judged: rescan now
            self._judge(backend, event, path)

    def _flood(self, report: dict) -> None:
        """A source's SYNs reached a flood rule at XDP: one violation for the flood (a deny's
        source is already dropped, by the program itself, for the rule's hold)."""
        rule = self.ruleset.by_id.get(report["rule_id"])
        kernel_verdict = report["kernel_verdict"]
        event = {
            "kind": "flood",
            "ts_ns": report["mono_ns"] + time.time_ns() - time.monotonic_ns(),
            "source_ip": report["dest_ip"],
            "family": report["family"],
            "dest_port": report["dest_port"],
            "syns": report["scan"],
            "rule_id": report["rule_id"],
            "verdict": "alert" if kernel_verdict == "allow" else "deny",
            "severity": rule.severity if rule else "",
            "enforced": kernel_verdict == "deny",
            "audit": kernel_verdict == "audit",
            "hold": rule.hold if rule and rule.hold else None,
            "policy_version": self.enforcer.policy_version or 0,
        }
        self.kernel_reports["floods_raised"] += 1
        self.verdicts[event["verdict"]] += 1
        self._queue(event)

    def _named(self, event: dict, waited: bool = False) -> bool:
        """Give a kernel call the name its container resolved its destination from ("":
        none, as the kernel judged it; None: not known). False while the answer behind the
        kernel's name hash has not been read yet (the dns pipe is read apart from this one)."""
        name_hash = event.get("name_hash", 0)  # kept for the flow's key (flow_of); not sent on
        if "dest_name" in event:
            return True
        if name_hash:
            name = self.names.name(name_hash)
            if name is None and not waited:
                return False
            event["dest_name"] = name
            if name is None:
                self.names.counts["calls_unnamed"] += 1  # the answer was lost on its way here
        else:
            event["dest_name"] = "" if self.enforcer and event["cgroup_id"] in self.enforcer.monitored else None
        return True

    def handle_dns(self, _backend: str, record: dict) -> None:
        """A DNS response a container received: learn its names, then let the calls waiting
        for one of them go on. One the kernel learned nothing from (it answered no query the
        socket sent, or a container sent it as a trusted resolver) is reported instead."""
        if reason := refused_reason(record):
            self.names.counts[f"refused_{reason}"] += 1
            if report := self.refused_answers.add(record, reason, time.monotonic()):
                self._refused_report(report)
            return
        try:
            self.names.heard(record["name_hash"], record["message"])
        except ValueError as exc:
            self.names.counts["unreadable"] += 1
            log.debug("dns record from cgroup %s: %s", record["cgroup_id"], exc)
        self.release_unnamed()

    def release_unnamed(self, force: bool = False) -> None:
        """Calls whose name is known now, or that waited NAME_WAIT, go on (in arrival order)."""
        if not self.unnamed:
            return
        now, waiting = time.monotonic(), self.unnamed
        self.unnamed = collections.deque()
        for deadline, event in waiting:
            late = force or now >= deadline
            if self.names.name(event["name_hash"]) is not None or late:
                self._named(event, waited=True)
                self.handle(KERNEL, event)
            else:
                self.unnamed.append((deadline, event))

    def handle_proc(self, _backend: str, event: dict) -> None:
        """An exec, exit, open or refused call in a monitored container: attributed and judged
        like a connection."""
        if event.pop("hash_due", False):  # a content hash rule decides it: hashed first, held meanwhile
            self._hash_then_judge(_backend, event)
            return
        known = self.enforcer.hashes.get(event.pop("file", None), "") if event["event"] == "exec" else ""
        event["sha256"] = event.get("sha256") or known  # a file hashed before: its content's hash
        event.pop("loader_fd", None)
        event["source"] = KERNEL
        event["kind"] = event.pop("event")
        how = event.get("how", "")
        if event["kind"] == "refuse":  # a call refused to keep an open deny whole (process.bpf.h)
            event.update(kind="call", path=CALLS[how])
        elif event["kind"] == "socket":  # a raw, packet, ping or SCTP socket made (sock.bpf.h)
            event["path"] = socket_text(
                event["socket"], event.pop("family"), event.pop("type"), event.pop("protocol"), event["unix_path"]
            )
        group = event.pop("group")
        grown = self.proc_groups.growth(group, event.pop("folded"))
        event["ts_ns"] = event.pop("mono_ns") + time.time_ns() - time.monotonic_ns()
        held = event.pop("held", False)
        listing = event.pop("listing", held)  # held for its container's listing (not its files alone)
        if event.pop("files_due", False):  # held to look the rules' files up through it first
            self.enforcer.hold_for_files(event["cgroup_id"], event["pid"])
        if held:  # stopped at exec in a container not listed yet: released by the kernel loop
            self._hold(event["cgroup_id"], event["pid"])
        path = self.cgroups.path(event["cgroup_id"])
        if self.monitor_scope != "*" and not glob_match(path or "", self.monitor_scope):
            self.out_of_scope += 1
            if held:
                self.held_execs.add(event["pid"])  # not ours to judge: it goes on when listed
            return
        event["cgroup_path"] = _fit_path(path or "")
        ref = identify(path, self.docker_roots, self.podman_roots)
        event["container"] = ref.as_event() if ref else None
        pid = event["pid"]
        event["parent_binary"] = self.processes.binary(event["ppid"])
        if event["kind"] in ("open", "call", "socket"):
            event["binary"] = self.processes.binary(pid, event["ppid"], event["comm"])
        elif event["kind"] == "exec":
            self.processes.exec(pid, event["binary"], event["ppid"], event["comm"])
        else:
            self.processes.exit(pid)
        for name in ("lifetime_ns", "exit_code"):  # an exec has neither
            if event.get(name, 0) is None:
                del event[name]
        if event["kind"] == "open" and event["result"] == EPERM and (how in WRITE_CALLS or how == "as_given"):
            if not self._refused_write(event, how) and how in WRITE_CALLS:
                return  # refused for another reason than a file of ours
        if how == "as_given" and not event["given"]:
            event["given"] = event["path"]  # a failed open: judged by the name it gave, the only one it has
        elif event["given"] == event["binary" if event["kind"] != "open" else "path"]:
            event["given"] = ""  # said once
        enforcer = self.enforcer  # the kernel judged with this container's rules (else: a hold, a new one)
        listed = (
            not listing and event["cgroup_id"] in enforcer.scope_ids and enforcer.policy_version == self.ruleset.version
        )
        refused = event.pop("refused", False)
        judge(event, self.ruleset, ref.name if ref else None, enforcer.rule_for_slot,
              enforcer.in_kernel if listed and not refused else lambda _rule_id: False)  # fmt: skip
        if refused and event["verdict"] == "deny" and not event["audit"]:
            event["enforced"] = True  # refused by the file's immutable attribute: nothing was changed
        if how == "cgroups":  # the bound on a container's cgroups (CE_MAX_NESTED), no rule's
            event.update(rule_id="cgroup-flood", severity="high")
        event.pop("how", None)
        event.pop("socket", None)
        event.pop("unix_path", None)
        event.pop("dirfd", None)
        if event["kind"] == "open" and event["verdict"] == "allow" and not event["rule_id"]:
            if not watched(event["path"], event["access"], self.enforcer.watches):
                self.proc_counts["open_unwatched"] += 1 + grown  # let through by a glob's literal prefix
                return
        event["policy_version"] = self.ruleset.version
        self.proc_counts[event["kind"]] += 1
        if event["verdict"] == "deny" and not event["enforced"] and not event["audit"]:
            if listing and self._signal_held(pid, event["cgroup_id"], signal.SIGKILL):
                event["enforced"] = True  # stopped at exec by the hold: it never ran
            else:
                reason = next((n["message"] for n in self.enforcer.notes if n["rule_id"] == event["rule_id"]), "")
                event["unenforced"] = (reason or f"judged by the agent after the {event['kind']}")[:200]
                self.unenforced[event["unenforced"]] += 1
        if event["enforced"]:
            self.proc_counts["killed"] += 1
        if held:
            self.held_execs.add(pid)
            self._kernel_wakeup.set()
        self.proc_groups.remember(group, event)
        if grown:
            event["count"] = 1 + grown  # this record, and its group's since the last one
            self.proc_counts[event["kind"]] += grown
        self._emit(event)

    def _judge(self, backend: str, event: dict, path: str | None) -> None:
        event["cgroup_path"] = _fit_path(path or "")
        ref = identify(path, self.docker_roots, self.podman_roots)
        event["container"] = ref.as_event() if ref else None
        kernel_verdict = event.pop("kernel_verdict", "allow")
        slot = event.pop("slot", 0)
        if not event.get("scan"):
            event.pop("scan", None)
        if "dest_port_hi" in event:
            self.kernel_reports["calls_summed"] += event["count"]
        if "scan" in event:
            self.kernel_reports["scans_raised"] += 1
        if kernel_verdict != "allow":
            self._kernel_deny(event, kernel_verdict == "audit", slot)
            return
        if "scan" in event or "dest_port_hi" in event:  # a scan rule's alert, or a scan's sum: judged in the kernel
            rule = self.ruleset.by_id.get(event["rule_id"]) if "scan" in event else None
            if rule is None:
                event.pop("scan", None)
        else:
            rule = self.ruleset.evaluate(
                Flow.of(
                    event["dest_ip"],
                    event["dest_port"],
                    cgroup_id=event["cgroup_id"],
                    cgroup_path=path,
                    container=ref.name if ref else None,
                    dest_name=event.get("dest_name"),
                )
            )
        event["verdict"] = rule.action if rule else "allow"
        event["rule_id"] = rule.id if rule else ""
        event["severity"] = rule.severity if rule else ""
        event["policy_version"] = self.ruleset.version
        event["audit"] = bool(rule and rule.audit)
        if backend == KERNEL:
            event["result"] = None  # let through; the programs run before the connection is tried
            event["enforced"] = False
        else:
            event["enforced"] = event["verdict"] == "deny" and event["result"] == EPERM
            event["op"] = "connect"
            if "count" not in event:
                self.flows.note(event)
        if event["verdict"] == "deny" and not event["enforced"] and not event["audit"]:
            event["unenforced"] = reason = self._unenforced_reason(event, rule, path)
            self.unenforced[reason] += event.get("count", 1)
        self._emit(event)

    def _unenforced_reason(self, event: dict, rule, path: str | None) -> str:
        """Why a deny verdict went through (as far as the agent can tell when it judges)."""
        enforcer = self.enforcer
        if enforcer is None:
            return "no kernel enforcement on this node"
        if not enforcer.in_scope(path):
            return "not a container in the enforce scope"
        note = next((n["message"] for n in enforcer.notes if n["rule_id"] == rule.id), "")
        if note:
            return note[:200]
        if enforcer.policy_version != self.ruleset.version:
            return f"the kernel held policy {enforcer.policy_version}, not {self.ruleset.version}"
        if event["cgroup_id"] not in enforcer.scope_ids:
            return "container not yet listed in the kernel"
        return "let through by the kernel"

    def handle_counts(self, backend: str, maps: dict) -> None:
        """A map print from the tracer: each flow's newly counted calls as one event."""
        for event in self.flows.dump(maps):
            self.handle(backend, event)

    def _tracer_started(self, backend: str) -> None:
        self.flows.restart()

    def handle_lifecycle(self, _backend: str, record: dict) -> None:
        """A container cgroup the kernel classified: list it now."""
        self._await_listing(record["cgroup_id"])

    def _await_listing(self, cgid: int) -> None:
        self.enforcer.classified(cgid)
        self.pending.setdefault(cgid, time.monotonic())
        self._kernel_wakeup.set()

    def _hash_then_judge(self, backend: str, event: dict) -> None:
        """Hash the file a held exec runs (in a thread), teach the kernel its hash, then judge the
        exec as a held one: the agent applies the rules and kills it before it ran if one denies."""
        cgid, enforcer = event["cgroup_id"], self.enforcer
        enforcer.hashing[cgid] = enforcer.hashing.get(cgid, 0) + 1

        async def hash_then_judge():
            try:
                digest = await asyncio.to_thread(hash_file, event["pid"], event.get("loader_fd"))
            finally:
                enforcer.hashing[cgid] -= 1
            if digest:
                enforcer.learn_hash(event["file"], digest)
                self._kernel_wakeup.set()
            event.update(sha256=digest or "", listing=True)
            self.handle_proc(backend, event)

        task = asyncio.get_running_loop().create_task(hash_then_judge())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refused_write(self, event: dict, how: str) -> bool:
        """A call refused with EPERM where files are immutable for write denies: if it named one
        of those files, the record becomes the refused write to it (its path, the call and the
        names it gave), judged by the rule that protects it. Returns whether it did."""
        enforcer = self.enforcer
        guarded = enforcer.guard.guarded()
        names = [event["path"], event["given"]]
        root = enforcer.root_process(self.cgroups.path(event["cgroup_id"]) or "")
        found = refused_file(event["pid"], names, event.get("dirfd", AT_FDCWD), guarded, root) if guarded else None
        if found is None:
            return False
        call = "open" if how == "as_given" else how
        event.update(path=found, given=f"{call}({', '.join(filter(None, names))})"[:1024], refused=True)
        return True

    def _hold(self, cgid: int, pid: int) -> None:
        """A process the kernel stopped at exec (its exec record says so: one record, so no
        other pipe's record can come late and leave the hold waiting for it)."""
        self._await_listing(cgid)
        self.held.setdefault(cgid, set()).add(pid)
        self.holds["held"] += 1

    async def _release_holds(self) -> None:
        """Let held execs go on once their container is listed and its rules are in the kernel
        (or after MAX_HOLD, counted as expired: the agent never blocks a container for long)."""
        now = time.monotonic()
        judged = {c for c in self.pending if self.enforcer.judged(c)}
        # a held exec goes on only once its own record is judged (an exec rule may kill it)
        judged -= {c for c in judged if not self.held.get(c, set()) <= self.held_execs}
        done = judged | {c for c, since in self.pending.items() if now - since > MAX_HOLD}
        if not done:
            return
        for scope in self.enforcer.scopes:
            if scope.cgroup_id in done:  # its events may come after a `--rm` container is gone
                self.cgroups.learn(scope.cgroup_id, scope.path)
        await asyncio.to_thread(self.enforcer.release, done)
        for cgid in judged:  # how long a new container waited to be listed, held or not
            self.list_ms_max = max(self.list_ms_max, (now - self.pending[cgid]) * 1000)
        for cgid in done:
            since = self.pending.pop(cgid)
            pids = self.held.pop(cgid, set()) or self._stopped_in(cgid, since)
            self.held_execs -= pids
            if cgid not in judged:
                self.holds["expired"] += len(pids)
            for pid in pids:
                if self._signal_held(pid, cgid, signal.SIGCONT):
                    self.holds["released"] += 1
                    self.hold_ms_max = max(self.hold_ms_max, (time.monotonic() - since) * 1000)

    def _stopped_in(self, cgid: int, since: float) -> set[int]:
        """Processes stopped in a cgroup whose hold the agent did not see (it restarted)."""
        if since > self._started_mono:
            return set()
        path = self.cgroups.path(cgid)
        try:
            with open(os.path.join(self.cgroups.root, (path or "").lstrip("/"), "cgroup.procs")) as fh:
                pids = {int(line) for line in fh if line.strip()}
        except (OSError, ValueError):
            return set()
        return {pid for pid in pids if state(pid) == "T"}

    def _signal_held(self, pid: int, cgid: int, sig: int) -> bool:
        """Continue (or kill) a held process, if it is still the one in that cgroup. It has
        run none of its own code: the kernel's SIGSTOP is taken before it returns to it."""
        path = _cgroup2_path(pid)
        if path is None or self.cgroups.id_of(path) != cgid:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _kernel_deny(self, event: dict, audit: bool, slot: int) -> None:
        """A call the programs refused (or, audit, would have), by their rule."""
        rule_id = event["rule_id"] or self.enforcer.rule_for_slot(slot)
        rule = self.ruleset.by_id.get(rule_id)
        if rule and rule.kind in ("scan", "limit") and "scan" not in event:
            event["held"] = True  # refused by a scan's hold or a limit: reported by the scan or the limit
        event.update(
            rule_id=rule_id,
            result=None if audit else EPERM,
            verdict="deny",
            severity=rule.severity if rule else "",
            policy_version=self.enforcer.policy_version or 0,
            enforced=not audit,
            audit=audit,
        )
        self._emit(event)

    def _emit(self, event: dict) -> None:
        event.pop("name_hash", None)  # the name itself goes on (dest_name)
        self.verdicts[event["verdict"]] += event.get("count", 1)
        if not self.folder.offer(event):
            self._queue(event)
        else:
            self._fold_wakeup.set()

    def flush_folds(self, force: bool = False) -> None:
        for event in self.folder.due(force):
            self._queue(event)

    def _queue(self, event: dict) -> None:
        if len(self.outbox) >= self.outbox_cap:
            self.outbox_dropped += self.outbox.popleft().get("count", 1)
        self.outbox.append(event)
        self.wakeup.set()

    # -- policy ---------------------------------------------------------------
    def set_policy(self, version: int, specs: list) -> str:
        """Swap in a new rule set; on a bad one keep the old and return the error."""
        try:
            self.ruleset = RuleSet.from_specs(specs, version)
        except RuleError as exc:
            self.policy_error = f"policy {version} refused, keeping {self.ruleset.version}: {exc}"
            log.error(self.policy_error)
            return self.policy_error
        self.policy_error = ""
        self.policy_received = True
        self._kernel_wakeup.set()
        log.info("policy version %d applied (%d rules)", version, len(self.ruleset))
        return ""

    # -- kernel enforcement -----------------------------------------------------
    async def _kernel_loop(self) -> None:
        enforcer = self.enforcer
        while True:
            try:
                await asyncio.to_thread(enforcer.start)
                break
            except (EnforcerError, BpftoolError, OSError) as exc:
                self.kernel_error = f"enforcement not started: {exc}"
                log.error("%s; retrying in %.0fs", self.kernel_error, START_RETRY)
                await asyncio.sleep(START_RETRY)
        self.kernel_error = ""
        self.kernel_flows.resume(await asyncio.to_thread(enforcer.flows), self.kernel_state, enforcer.layout.root.name)
        self.proc_groups.resume(await asyncio.to_thread(kernel_processes.groups, enforcer.layout))
        self.scan_sums.resume(await asyncio.to_thread(enforcer.scans))
        self.limit_reports.resume(await asyncio.to_thread(enforcer.limits))
        self.kernel_reporting = True  # calls before this were the tracer's to report (if it ran)
        for cgid in await asyncio.to_thread(enforcer.pending):  # holds a previous agent left
            self.pending[cgid] = self._started_mono
            enforcer.classified(cgid)
        pipe = Supervisor(perf_pipe(KERNEL, lambda: enforcer.layout.map("events"), perf_lines.parse), self.handle)
        life = Supervisor(
            perf_pipe(LIFECYCLE, lambda: enforcer.layout.map("lifecycle"), perf_lines.parse_lifecycle),
            self.handle_lifecycle,
        )
        procs = Supervisor(perf_pipe(PROCS, lambda: enforcer.layout.map("procs"), perf_lines.parse_proc),
                           self.handle_proc)  # fmt: skip
        answers = Supervisor(perf_pipe(DNS, lambda: enforcer.layout.map("dns"), perf_lines.parse_dns, DNS_WATERMARK),
                             self.handle_dns)  # fmt: skip
        pipes = (pipe, life, procs, answers)
        self.supervisors += pipes
        pipe_tasks = [asyncio.create_task(sup.run()) for sup in pipes]
        await asyncio.gather(*(sup.ready.wait() for sup in pipes))
        self.kernel_observing.set()
        last_counters = last_flows = last_traffic = 0.0
        try:
            while True:
                try:
                    await asyncio.wait_for(self._kernel_wakeup.wait(), 0.05 if self.pending else KERNEL_POLL)
                except TimeoutError:
                    pass
                self._kernel_wakeup.clear()
                try:
                    if self._policy_due():
                        patterns = enforcer.patterns
                        await asyncio.to_thread(enforcer.sync, self.ruleset)
                        self._policy_written()
                        if enforcer.patterns != patterns:  # names learned under the old rules
                            await asyncio.to_thread(enforcer.rewrite_resolved, self.names.name)
                    else:
                        await asyncio.to_thread(enforcer.rescan)
                    self.kernel_error = ""
                except (BpftoolError, EnforcerError, OSError) as exc:
                    self.kernel_error = str(exc)
                    log.error("enforcement: %s", exc)  # enforcement stays attached; we retry
                try:  # right after the rescan that lists them; and after MAX_HOLD whatever failed
                    await self._release_holds()
                    if time.monotonic() - last_flows >= FLOW_POLL:
                        await self.read_kernel_tables()
                        last_flows = time.monotonic()
                    if time.monotonic() - last_traffic >= TRAFFIC_POLL:
                        await self.read_traffic()
                        last_traffic = time.monotonic()
                    if time.monotonic() - last_counters >= COUNTER_POLL:
                        (self.kernel_counters, self.kernel_lost, self.dns_stats, self.traffic_lost, self.proc_lost,
                         self.exec_counts) = await asyncio.to_thread(self._read_counts)  # fmt: skip
                        gone = {c for c in self.exec_counts if not self.cgroups.alive(c)}
                        if gone:  # the map is bounded: a removed container's count goes with it
                            await asyncio.to_thread(kernel_processes.forget_counts, enforcer.layout, gone)
                        last_counters = time.monotonic()
                except (BpftoolError, OSError) as exc:
                    self.kernel_error = str(exc)
                    log.error("enforcement: %s", exc)
        finally:
            await asyncio.gather(*(sup.stop() for sup in pipes))
            self.release_unnamed(force=True)
            for task in pipe_tasks:
                task.cancel()
            await asyncio.gather(*pipe_tasks, return_exceptions=True)
            try:  # what the programs counted up to now goes out with this agent, not the next
                await self.read_traffic(force=True)
                await self.read_kernel_tables(final=True)
            except (BpftoolError, OSError) as exc:
                log.error("last flow-table read: %s", exc)

    def _policy_due(self) -> bool:
        """A new policy, or one the kernel does not hold yet (a failed write), when its retry is due."""
        if not self.policy_received:
            return False
        if self.enforcer.ruleset is not self.ruleset:
            return True
        expiry = self.enforcer.next_expiry
        if expiry is not None and dt.datetime.now(dt.UTC) >= expiry:
            return True  # an ingress rule ran out: what it covered goes to the rules below it
        return self.enforcer.policy_version != self.ruleset.version and time.monotonic() >= self._sync_retry_at

    def _policy_written(self) -> None:
        if self.enforcer.policy_version == self.ruleset.version:
            self._sync_backoff = SYNC_RETRY
            self.kernel_ready.set()
        else:  # the kernel holds part of it, or the old one: write it again, later and later
            self._sync_retry_at = time.monotonic() + self._sync_backoff
            self._sync_backoff = min(self._sync_backoff * 2, SYNC_RETRY_MAX)

    async def read_kernel_tables(self, final: bool = False) -> None:
        """The programs' flow counters: what they counted since the last reading, as events
        (a flow's sent calls carry its counter too; this catches flows that went quiet); the
        scans' sums (`final`: all of them, the agent stops); what the limits held back; the
        counts of like process records. Read in one trip to a thread: each trip wakes a
        thread and the event loop, which on a busy node takes a CPU from its containers."""
        flows, pruned, scans, limits, groups = await asyncio.to_thread(self._read_tables)
        for event in self.kernel_flows.dump(flows):
            self.handle(KERNEL, event)
        self.kernel_flows.forget(pruned)
        if self.kernel_state:
            self.kernel_flows.save(self.kernel_state, self.enforcer.layout.root.name)
        gone = [cgid for cgid in scans if not self.cgroups.alive(cgid)]
        for event in self.scan_sums.dump(scans, force=final, ending=gone):
            self.handle(KERNEL, event)
        if gone:
            await asyncio.to_thread(self.enforcer.forget_scans, gone)
        for cgid, entry, held, window in self.limit_reports.add(limits):
            self._limit_report(cgid, entry, held, window)
        for report in self.refused_answers.due(time.monotonic(), force=final):
            self._refused_report(report)
        for event in self.proc_groups.dump(groups):
            self.proc_counts[event["kind"]] += event["count"]
            self._emit(event)
        if idle := self.proc_groups.idle(groups):
            await asyncio.to_thread(kernel_processes.forget_groups, self.enforcer.layout, idle)

    def _read_tables(self) -> tuple:
        """(flows, the flow keys pruned from the kernel's table, scans, limits, process groups)."""
        enforcer = self.enforcer
        flows = enforcer.flows()
        return (flows, enforcer.prune_flows(flows), enforcer.scans(), enforcer.limits(),
                kernel_processes.groups(enforcer.layout))  # fmt: skip

    def _where(self, cgroup_id: int) -> dict | None:
        """A cgroup's path and container as a record carries them; None outside this agent's
        scope (another node's, when agents share a test host)."""
        path = self.cgroups.path(cgroup_id)
        if self.monitor_scope != "*" and not glob_match(path or "", self.monitor_scope):
            return None
        ref = identify(path, self.docker_roots, self.podman_roots)
        return {"cgroup_path": _fit_path(path or ""), "container": ref.as_event() if ref else None}

    def _limit_report(self, cgid: int, entry: dict, held: dict, window: float) -> None:
        """What a container's rate limits held back: one violation per limit that bit."""
        if (where := self._where(cgid)) is None:
            return
        for what, slot, audit, rate, bit in (
            ("egress", entry["egress_slot"], entry["egress_audit"], entry["egress_rate"], held["held_bytes"]),
            ("connections", entry["conn_slot"], entry["conn_audit"], entry["conn_rate"], held["refused"]),
        ):
            if not bit:
                continue
            rule_id = self.enforcer.rule_for_slot(slot)
            rule = self.ruleset.by_id.get(rule_id)
            self.kernel_reports[f"limit_{what}_reports"] += 1
            self._queue({"kind": "limit", "ts_ns": time.time_ns(), "cgroup_id": cgid, **where,
                         "rule_id": rule_id or f"slot {slot}", "verdict": "deny",
                         "severity": rule.severity if rule else "", "enforced": not audit, "audit": audit,
                         "what": what, "rate": rate, "held_bytes": held["held_bytes"] if what == "egress" else 0,
                         "held_packets": held["held_packets"] if what == "egress" else 0,
                         "refused": held["refused"] if what == "connections" else 0, "window_s": round(window),
                         "policy_version": self.enforcer.policy_version or 0})  # fmt: skip

    def _refused_report(self, report: dict) -> None:
        """DNS answers a container got that taught the kernel nothing, or responses it tried to
        send as a trusted resolver (dropped): one violation for those of a window."""
        if (where := self._where(report["cgroup_id"])) is None:
            return
        forged = report["reason"] == FORGED
        self.kernel_reports[f"dns_{report['reason']}_reports"] += 1
        self._queue({"kind": "dns", "ts_ns": time.time_ns(), **report, **where, "rule_id": f"dns-{report['reason']}",
                     "verdict": "deny" if forged else "alert", "severity": "high", "enforced": forged,
                     "audit": False, "family": 6 if ":" in report["peer"] else 4,
                     "policy_version": self.enforcer.policy_version or 0})  # fmt: skip

    async def read_traffic(self, force: bool = False) -> None:
        """Drain the packet programs' table; each minute that is over goes out as one record
        per flow (kind "traffic")."""
        self.traffic.add(await asyncio.to_thread(self.enforcer.read_traffic), time.time_ns())
        for minute, flow, counters in self.traffic.due(time.time_ns(), force):
            cgroup_id, family, proto, local_port, remote_ip, remote_port = flow
            if (where := self._where(cgroup_id)) is None:
                continue
            self._queue({"kind": "traffic", "ts_ns": minute * 60 * 10**9, "cgroup_id": cgroup_id, **where,
                         "family": family, "proto": PROTOCOLS.get(proto, str(proto)), "local_port": local_port,
                         "remote_ip": remote_ip, "remote_port": remote_port, **counters})  # fmt: skip

    def _read_counts(self) -> tuple:
        """The kernel's counters for health, in one trip to a thread: rule counters, lost
        records, DNS and traffic counts, lost process records, exec counts."""
        enforcer = self.enforcer
        return (enforcer.counters(), enforcer.lost(), enforcer.dns_stats(), enforcer.traffic_lost(),
                kernel_processes.lost(enforcer.layout), kernel_processes.exec_counts(enforcer.layout))  # fmt: skip

    async def _fold_loop(self) -> None:
        """Folded counts go out when their window closes, calls that wait for their name when
        it comes: looked at every 0.1 s while any wait, else asleep until one does (a quiet
        node's agent does not wake ten times a second for nothing)."""
        try:
            while True:
                if self.unnamed or self.folder.pending:
                    await asyncio.sleep(0.1)
                else:
                    self._fold_wakeup.clear()
                    await self._fold_wakeup.wait()
                self.release_unnamed()
                self.flush_folds()
        finally:
            self.flush_folds(force=True)

    # -- health ---------------------------------------------------------------
    def identity(self) -> dict:
        return {
            "hostname": socket.gethostname(),
            "kernel": os.uname().release,
            "agent_version": AGENT_VERSION,
            "backends": sorted({s.backend.name for s in self.supervisors} | ({KERNEL} if self.enforcer else set())),
            "features": self.features,
            "degraded": self.degraded,
        }

    def health(self) -> dict:
        health = {
            "backends": {s.backend.name: s.health.as_dict() for s in self.supervisors},
            "outbox": len(self.outbox),
            "outbox_dropped": self.outbox_dropped,
            "out_of_scope": self.out_of_scope,
            "storm": self.folder.storm,
            "covered": self.covered,
            "bad_counts": self.flows.bad,  # tracer count entries that could not be read
            "kernel_lost": self.kernel_lost + sum(self.proc_lost),
            "processes": dict(self.proc_counts) | dict(zip(kernel_processes.LOST, self.proc_lost, strict=True)),
            "exec_counts": self._exec_counts(),
            "not_enforced": sum(self.unenforced.values()),
            "not_enforced_reasons": dict(self.unenforced.most_common(10)),
            "holds": dict(self.holds) | self._hold_times(),
            "aggregated": self.folder.folded,
            "traffic": dict(self.traffic.totals) | {"lost_bytes": self.traffic_lost},
            "kernel_reports": dict(self.kernel_reports),
            "dns": dict(self.names.counts) | {f"kernel_{k}": v for k, v in self.dns_stats.items()},
            "verdicts": dict(self.verdicts),
            "policy_version": self.ruleset.version,
            "policy_error": self.policy_error,
            "uptime": round(time.time() - self.started, 1),
            "degraded": self.degraded,
        }
        if self.enforcer is not None:
            health["kernel"] = self.enforcer.health() | {
                "counters": self.kernel_counters,
                "error": self.kernel_error or self.enforcer.error,
            }
        return health

    def _exec_counts(self) -> dict[str, int]:
        """Execs counted in the kernel, per container path (the busiest 50)."""
        named = {}
        for cgid, count in sorted(self.exec_counts.items(), key=lambda kv: -kv[1])[:50]:
            named[self.cgroups.path(cgid) or str(cgid)] = count
        return named

    def _hold_times(self) -> dict:
        """Containers waiting now; the longest hold; the longest a new container waited to be listed."""
        hold, listing = round(self.hold_ms_max, 1), round(self.list_ms_max, 1)
        return {"pending": len(self.pending), "max_ms": hold, "list_ms": listing}

    # -- lifecycle ------------------------------------------------------------
    async def wait_ready(self, timeout: float) -> None:
        """Until every backend has attached its probes (and the programs are read)."""
        waits = [s.ready.wait() for s in self.supervisors]
        if self.enforcer is not None:
            waits.append(self.kernel_observing.wait())
        await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def run(self, *tasks) -> None:
        """Run the backends, enforcement (and the given uplink coroutines) until cancelled."""
        runners = [asyncio.create_task(s.run()) for s in self.supervisors]
        runners.append(asyncio.create_task(self._fold_loop()))
        kernel = asyncio.create_task(self._kernel_loop()) if self.enforcer is not None else None
        runners += [kernel] if kernel else []
        runners += [asyncio.create_task(t) for t in tasks]
        try:
            await asyncio.gather(*runners)
        finally:
            await asyncio.gather(*(s.stop() for s in self.supervisors), return_exceptions=True)
            if kernel:  # its last reads of the kernel's counts (a second cancel would cut them short)
                await asyncio.wait({kernel}, timeout=FINAL_READS)
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)


def _fit_path(path: str) -> str:
    """A cgroup path as the dashboard stores it (MAX_PATH characters): a deeper one keeps its
    end, where the container is, and says it was cut (`…/`), so its event is stored, not refused."""
    return path if len(path) <= MAX_PATH else "…/" + path[-(MAX_PATH - 2) :]


def _cgroup2_path(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return next((line[3:].strip() for line in fh if line.startswith("0::")), None)
    except OSError:
        return None
