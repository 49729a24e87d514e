/* SPDX-License-Identifier: GPL-2.0 */
/*
 * file.bpf.h - the opens that matter in the containers: opens of watched paths, with what
 * they asked for (read, write, create, truncate) and what they got, and file rules that
 * kill the opener.
 *
 * Part of enforce_connect.bpf.o (included after process.bpf.h): it shares the scope
 * (`monitored`), the rule counters, the process record (`ce_proc`, type CE_PROC_OPEN, the
 * path in `data`, the result in `exit_code`), its perf array (`procs`) and the kernel
 * folding of like records (`proc_flows`). This kernel has no fs tracepoints, no kprobes,
 * and refuses fentry and LSM programs, so the hooks are the syscall tracepoints of
 * open(), openat(), openat2() and creat(): entry judges, exit adds the result.
 *
 * Ordinary I/O costs as little as this kernel allows (BENCHMARKS.md): outside the
 * monitored cgroups, a hash lookup at entry and one at exit; inside, the path as given
 * (its first CE_MATCH_LEN bytes) and one lookup in `file_rules`, an LPM trie of watched
 * path prefixes (two when some rule names a cgroup: this cgroup's entries, then every
 * container's). Reading the path from user memory is most of that cost (measured:
 * ~200 ns of ~300 ns here, any 8 bytes ~250 ns, so a shorter first read saves nothing).
 * Only an open whose access a watch names is recorded, kept in `open_pending` until its
 * exit and then sent or counted with its group like an exec.
 * A deny (not audit) sends SIGKILL at entry: the open itself still runs (tracepoints
 * cannot fail a call), but the process dies before it returns to user space, so it never
 * reads a byte of the file nor writes one through it (a create or truncate the open
 * itself asked for has happened by then). The path is the one given to open(): a
 * relative path is matched as written.
 */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_path_key);
	__type(value, struct ce_file_rule);
} file_rules SEC(".maps");

/* [0]: CE_FILE_WATCHED when `file_rules` holds anything, CE_FILE_SCOPED when some entry
 * names a cgroup (written by the agent with the trie). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} file_config SEC(".maps");

/* Watched opens between entry and exit, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct ce_proc);
} open_pending SEC(".maps");

#define CE_O_ACCMODE 3
#define CE_O_WRONLY 1
#define CE_O_RDWR 2
#define CE_O_CREAT 0100
#define CE_O_TRUNC 01000

static __always_inline __u8 access_of(__u64 flags)
{
	__u8 acc = 0;

	switch (flags & CE_O_ACCMODE) {
	case CE_O_WRONLY:
		acc = CE_ACC_WRITE;
		break;
	case CE_O_RDWR:
		acc = CE_ACC_READ | CE_ACC_WRITE;
		break;
	default:
		acc = CE_ACC_READ;
	}
	if (flags & CE_O_CREAT)
		acc |= CE_ACC_CREATE;
	if (flags & CE_O_TRUNC)
		acc |= CE_ACC_TRUNC;
	return acc;
}

static __always_inline struct ce_verdict *better_verdict(struct ce_verdict *best, struct ce_file_rule *entry, int bit)
{
	if (!entry)
		return best;
	struct ce_verdict *hit = &entry->by_access[bit];
	if (hit->rank && (!best || hit->rank < best->rank))
		return hit;
	return best;
}

static __always_inline int file_enter(void *ctx, const char *filename, __u64 flags)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 zero = 0;

	if (!bpf_map_lookup_elem(&monitored, &cgid))
		return 0;
	__u32 *config = bpf_map_lookup_elem(&file_config, &zero);
	if (!config || !(*config & CE_FILE_WATCHED))
		return 0;
	struct ce_path_key *key = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!key)
		return 0;
	/* No memset: a trie lookup reads no byte past the key's prefixlen. */
	long n = bpf_probe_read_user_str(key->path, sizeof(key->path), filename);
	if (n <= 0)
		return 0;
	key->prefixlen = 64 + 8 * n;
	struct ce_file_rule *mine = NULL;
	if (*config & CE_FILE_SCOPED) {
		key->cgroup_id = cgid;
		mine = bpf_map_lookup_elem(&file_rules, key);
	}
	key->cgroup_id = 0;
	struct ce_file_rule *every = bpf_map_lookup_elem(&file_rules, key);
	__u8 acc = access_of(flags);
	__u8 watch = ((mine ? mine->watch : 0) | (every ? every->watch : 0)) & acc;
	if (!watch)
		return 0;

	struct ce_verdict *best = NULL;
	for (int bit = 0; bit < CE_ACCESSES; bit++) {
		if (acc & (1 << bit)) {
			best = better_verdict(best, mine, bit);
			best = better_verdict(best, every, bit);
		}
	}
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, (struct task_struct *)bpf_get_current_task(), cgid, CE_PROC_OPEN);
	ev->access = acc;
	n = bpf_probe_read_user_str(ev->data, CE_PATH_LEN, filename);
	if (n == CE_PATH_LEN)
		ev->cut = 1;
	ev->path_len = n > 0 ? n : 0;
	if (best) {
		__u32 slot = best->slot;
		__u64 *hits = bpf_map_lookup_elem(&counters, &slot);
		if (hits)
			*hits += 1;
		ev->slot = slot;
		if (best->action == CE_DENY) {
			ev->verdict = best->audit ? CE_V_AUDIT : CE_V_DENY;
			if (!best->audit)
				bpf_send_signal(CE_SIGKILL);
		}
	}
	__u64 tid = bpf_get_current_pid_tgid();
	if (bpf_map_update_elem(&open_pending, &tid, ev, BPF_ANY) != 0)
		proc_lost_one(ev);
	return 0;
}

static __always_inline int file_exit(void *ctx, long ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct ce_proc *ev = bpf_map_lookup_elem(&open_pending, &tid);

	if (!ev)
		return 0;
	ev->exit_code = ret;
	ev->ts_ns = bpf_ktime_get_ns();
	proc_send(ctx, ev, ev->verdict != CE_V_ALLOW);
	bpf_map_delete_elem(&open_pending, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int crossedge_openat(struct trace_event_raw_sys_enter *ctx)
{
	return file_enter(ctx, (const char *)ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_open")
int crossedge_open(struct trace_event_raw_sys_enter *ctx)
{
	return file_enter(ctx, (const char *)ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int crossedge_openat2(struct trace_event_raw_sys_enter *ctx)
{
	__u64 flags = 0; /* struct open_how starts with its flags */

	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	return file_enter(ctx, (const char *)ctx->args[1], flags);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int crossedge_creat(struct trace_event_raw_sys_enter *ctx)
{
	return file_enter(ctx, (const char *)ctx->args[0], CE_O_CREAT | CE_O_WRONLY | CE_O_TRUNC);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int crossedge_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return file_exit(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open")
int crossedge_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	return file_exit(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int crossedge_openat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	return file_exit(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int crossedge_creat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return file_exit(ctx, ctx->ret);
}
