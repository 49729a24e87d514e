/* SPDX-License-Identifier: GPL-2.0 */
/*
 * process.bpf.h - what runs in the containers: every exec and every process exit in a
 * monitored cgroup, a per-cgroup exec count, and exec rules that kill a forbidden binary
 * before it runs any code of its own.
 *
 * Part of enforce_connect.bpf.o (included at its end): it shares the scope (`monitored`),
 * the hold of a new container's first exec (`pending`), the rule counters and the
 * generation's lifecycle, and runs in the same sched_process_exec program as the hold, so
 * an exec costs one program run. Processes outside the monitored cgroups cost a hash
 * lookup and nothing else.
 *
 * Exec rules live in `exec_rules`, an LPM trie on (cgroup, path prefix): two lookups per
 * exec, (this cgroup, path) and (every container, path). An exact path rule includes the
 * path's NUL, so "/bin/sh" does not match "/bin/sha1sum"; a prefix rule ("/dev/shm/")
 * does not. Rules the trie cannot express (globs, parent matches) are judged by the agent.
 * A matching deny (not audit) sends SIGKILL from inside the exec: the new program never
 * runs, its parent sees it killed (wait status 9). The path is the one given to execve(),
 * as the kernel resolved it (bprm->filename): a relative exec is matched as written.
 */

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} procs SEC(".maps");

/* A ce_proc is larger than the BPF stack: it is built here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_proc);
} proc_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_path_key);
} key_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_path_key);
	__type(value, struct ce_rule);
} exec_rules SEC(".maps");

/* Execs per monitored cgroup since the entry was made (the agent reads and prunes it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, __u64);
} exec_counts SEC(".maps");

/* Groups of like records (ce_proc_key): within CE_WINDOW_NS of a group's last sent record,
 * a record only adds one to `folded`; the agent reads the growth (with the next sent
 * record, or from a dump of this map) as a count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CE_MAX_FLOWS);
	__type(key, struct ce_proc_key);
	__type(value, struct ce_flow);
} proc_flows SEC(".maps");

/* Records that could be neither sent nor counted: [0] execs, [1] exits, [2] opens. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} proc_lost SEC(".maps");

static __always_inline __u64 fnv1a(const char *bytes, __u32 len)
{
	__u64 h = 14695981039346656037ULL;

	for (int i = 0; i < CE_PATH_LEN; i++) {
		if (i >= len)
			break;
		h ^= (unsigned char)bytes[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static __always_inline void proc_lost_one(struct ce_proc *ev)
{
	__u32 which = ev->type - 1; /* CE_PROC_EXEC, _EXIT, _OPEN */
	__u64 *missed = bpf_map_lookup_elem(&proc_lost, &which);

	if (missed)
		__sync_fetch_and_add(missed, 1);
}

static __always_inline int proc_output(void *ctx, struct ce_proc *ev)
{
	__u64 size = (offsetof(struct ce_proc, data) + ev->path_len + ev->args_len) & 2047; /* for the verifier */

	if (size > sizeof(*ev))
		size = sizeof(*ev);
	return bpf_perf_event_output(ctx, &procs, BPF_F_CURRENT_CPU, ev, size);
}

/* Send a record, or count it with its group: every record is one or the other (or, when
 * neither the buffer nor the group table takes it, counted lost). A violation, or a
 * record from a cgroup whose first exec is held, is always sent. Returns 0 if the record
 * itself was sent (the agent will read it). */
static __always_inline int proc_send(void *ctx, struct ce_proc *ev, int alone)
{
	struct ce_proc_key key = {.cgroup_id = ev->cgroup_id, .ppid = ev->ppid, .type = ev->type};

	ev->folded = 0;
	if (alone) {
		if (proc_output(ctx, ev) == 0)
			return 0;
		proc_lost_one(ev);
		return -1;
	}
	if (ev->type == CE_PROC_EXEC) {
		key.hash = fnv1a(ev->data, ev->path_len);
	} else if (ev->type == CE_PROC_OPEN) {
		key.hash = fnv1a(ev->data, ev->path_len);
		key.ppid = ev->access;
		key.exit_code = ev->exit_code < 0 ? ev->exit_code : 0;
	} else {
		key.hash = fnv1a(ev->comm, sizeof(ev->comm));
		key.exit_code = ev->exit_code;
	}
	__u64 now = ev->ts_ns;
	struct ce_flow *flow = bpf_map_lookup_elem(&proc_flows, &key);
	if (flow && now - flow->window_ns < CE_WINDOW_NS) {
		__sync_fetch_and_add(&flow->folded, 1);
		return -1;
	}
	if (flow) {
		flow->window_ns = now;
		ev->folded = flow->folded;
	} else {
		struct ce_flow fresh = {.window_ns = now};
		if (bpf_map_update_elem(&proc_flows, &key, &fresh, BPF_NOEXIST) == 0)
			flow = bpf_map_lookup_elem(&proc_flows, &key);
	}
	if (proc_output(ctx, ev) == 0)
		return 0;
	if (flow)
		__sync_fetch_and_add(&flow->folded, 1); /* not sent: counted, reported with the group */
	else
		proc_lost_one(ev);
	return -1;
}

static __always_inline void proc_common(struct ce_proc *ev, struct task_struct *task, __u64 cgid, __u32 type)
{
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	__u64 ugid = bpf_get_current_uid_gid();

	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	ev->type = type;
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(parent, tgid);
	ev->uid = ugid;
	ev->gid = ugid >> 32;
	ev->start_ns = BPF_CORE_READ(task, group_leader, start_time);
	ev->verdict = CE_V_ALLOW;
	ev->slot = 0;
	ev->cut = 0;
	ev->access = 0;
	ev->held = 0;
	ev->exit_code = 0;
	ev->lifetime_ns = 0;
	ev->folded = 0;
	ev->path_len = 0;
	ev->args_len = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_probe_read_kernel_str(ev->pcomm, sizeof(ev->pcomm), BPF_CORE_READ(parent, comm));
}

/* The exec rule for this path in this cgroup, or NULL: the better of the two lookups. */
static __always_inline struct ce_rule *exec_rule(__u64 cgid, const char *filename)
{
	__u32 zero = 0;
	struct ce_path_key *key = bpf_map_lookup_elem(&key_scratch, &zero);

	if (!key)
		return NULL;
	__builtin_memset(key->path, 0, sizeof(key->path));
	long n = bpf_probe_read_kernel_str(key->path, sizeof(key->path), filename);
	if (n <= 0)
		return NULL;
	/* n counts the NUL: an exact rule's prefix covers it. A cut path (n == len) has none. */
	key->prefixlen = 64 + 8 * n;
	key->cgroup_id = cgid;
	struct ce_rule *hit = bpf_map_lookup_elem(&exec_rules, key);
	key->cgroup_id = 0;
	struct ce_rule *any = bpf_map_lookup_elem(&exec_rules, key);
	if (!hit || (any && any->rank < hit->rank))
		return any;
	return hit;
}

/* An exec in a monitored cgroup: judge it, count it, report it; in a container the agent
 * has not listed yet (`pending`), stop it before its program runs, if its record (which
 * says so) went out. */
static __always_inline void proc_exec(void *ctx, struct task_struct *task, struct linux_binprm *bprm, __u64 cgid)
{
	__u32 zero = 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	__u64 one = 1;
	int killed = 0;

	__u64 *count = bpf_map_lookup_elem(&exec_counts, &cgid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&exec_counts, &cgid, &one, BPF_NOEXIST);
	if (!ev)
		return;
	proc_common(ev, task, cgid, CE_PROC_EXEC);
	const char *filename = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(ev->data, CE_PATH_LEN, filename);
	if (n == CE_PATH_LEN)
		ev->cut = 1;
	__u32 off = n > 0 ? n : 0;
	off &= 2 * CE_PATH_LEN - 1; /* for the verifier: n is at most CE_PATH_LEN */
	ev->path_len = off;
	struct ce_rule *rule = exec_rule(cgid, filename);
	if (rule) {
		count_slot(rule->slot);
		ev->slot = rule->slot;
		if (rule->action == CE_DENY) {
			ev->verdict = rule->audit ? CE_V_AUDIT : CE_V_DENY;
			if (!rule->audit)
				killed = bpf_send_signal(CE_SIGKILL) == 0;
		}
	}
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start), end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	__u32 size = len < CE_ARGS_LEN ? len : CE_ARGS_LEN - 1;
	if (len >= CE_ARGS_LEN)
		ev->cut = 1;
	size &= CE_ARGS_LEN - 1; /* for the verifier: at most the field */
	if (size && bpf_probe_read_user(ev->data + off, size, (void *)start) == 0)
		ev->args_len = size;
	int pending_here = bpf_map_lookup_elem(&pending, &cgid) != NULL;
	ev->held = pending_here && !killed;
	if (proc_send(ctx, ev, ev->verdict != CE_V_ALLOW || pending_here) == 0 && ev->held)
		bpf_send_signal(CE_SIGSTOP);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(crossedge_exit, struct task_struct *task, bool group_dead)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();

	if (!group_dead || !bpf_map_lookup_elem(&monitored, &cgid))
		return 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, task, cgid, CE_PROC_EXIT);
	ev->exit_code = BPF_CORE_READ(task, signal, group_exit_code) ?: BPF_CORE_READ(task, exit_code);
	ev->lifetime_ns = ev->ts_ns - ev->start_ns;
	proc_send(ctx, ev, 0);
	return 0;
}
