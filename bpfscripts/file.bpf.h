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
 * itself asked for has happened by then). An absolute path is matched as given to
 * open() (".." and symbolic links unresolved); a relative one is judged at exit by the
 * path of the file it opened (fd_path: dentries walked up to the opener's root, across
 * mounts), where a deny kills just as early, before the call returns.
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

/* Relative opens in monitored cgroups between entry and exit, by thread: what they asked for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} open_relative SEC(".maps");

#define CE_WALK_LEN 512 /* a resolved path is built backwards in here */
#define CE_WALK_DEPTH 32 /* directories (and mounts) walked up at most */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[CE_WALK_LEN * 2]);
} walk_scratch SEC(".maps");

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

/* Which accesses of the path in `key` (n bytes, its NUL included when it fits) are
 * watched, and the best-ranked rule deciding them (*best, or NULL). */
static __always_inline __u8 file_lookup(struct ce_path_key *key, long n, __u64 cgid, __u32 config, __u8 acc,
					struct ce_verdict **best)
{
	key->prefixlen = 64 + 8 * n;
	struct ce_file_rule *mine = NULL;
	if (config & CE_FILE_SCOPED) {
		key->cgroup_id = cgid;
		mine = bpf_map_lookup_elem(&file_rules, key);
	}
	key->cgroup_id = 0;
	struct ce_file_rule *every = bpf_map_lookup_elem(&file_rules, key);
	__u8 watch = ((mine ? mine->watch : 0) | (every ? every->watch : 0)) & acc;

	*best = NULL;
	for (int bit = 0; bit < CE_ACCESSES; bit++) {
		if (acc & (1 << bit)) {
			*best = better_verdict(*best, mine, bit);
			*best = better_verdict(*best, every, bit);
		}
	}
	return watch;
}

/* Count the deciding rule and apply a deny: SIGKILL, delivered before the open returns. */
static __always_inline void file_decide(struct ce_proc *ev, struct ce_verdict *best)
{
	if (!best)
		return;
	count_slot(best->slot);
	ev->slot = best->slot;
	if (best->action == CE_DENY) {
		ev->verdict = best->audit ? CE_V_AUDIT : CE_V_DENY;
		if (!best->audit)
			bpf_send_signal(CE_SIGKILL);
	}
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
	__u64 tid = bpf_get_current_pid_tgid();
	__u8 acc = access_of(flags);
	if (key->path[0] != '/') { /* relative: judged at exit, by the file it opened */
		bpf_map_update_elem(&open_relative, &tid, &acc, BPF_ANY);
		return 0;
	}
	struct ce_verdict *best;
	if (!file_lookup(key, n, cgid, *config, acc, &best))
		return 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, (struct task_struct *)bpf_get_current_task(), cgid, CE_PROC_OPEN);
	ev->access = acc;
	n = bpf_probe_read_user_str(ev->data, CE_PATH_LEN, filename);
	if (n == CE_PATH_LEN)
		ev->cut = 1;
	ev->path_len = n > 0 ? n : 0;
	file_decide(ev, best);
	if (bpf_map_update_elem(&open_pending, &tid, ev, BPF_ANY) != 0)
		proc_lost_one(ev);
	return 0;
}

struct ce_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root;
	struct vfsmount *root_mnt;
	__u32 pos; /* where the path built so far starts in walk_scratch */
	__u32 cut;
};

/* One step up (bpf_loop's callback, so the verifier checks it once): prepend this
 * dentry's name, or cross to where its mount is mounted. Returns 1 when done. */
static long walk_step(__u32 index, struct ce_walk *w)
{
	__u32 zero = 0;
	char *buf = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct dentry *dentry = w->dentry; /* locals: CO-RE reads relocate every field they name */
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;

	if (!buf || (dentry == w->root && vfsmnt == w->root_mnt))
		return 1;
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) { /* the top of a mount */
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt)
			return 1;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->vfsmnt = &parent->mnt;
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(dentry, d_parent);
	if (up == dentry)
		return 1;
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	__u32 pos = w->pos;
	if (len + 1 > pos || pos >= CE_WALK_LEN) {
		w->cut = 1;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(buf + (pos & (CE_WALK_LEN - 1)), len & (CE_WALK_LEN - 1), BPF_CORE_READ(dentry, d_name.name));
	pos -= 1;
	buf[pos & (CE_WALK_LEN - 1)] = '/';
	w->pos = pos;
	w->dentry = up;
	return 0;
}

/* The path of the file behind fd, as the opener's root sees it, into ev->data: its
 * dentries walked up to that root, crossing mounts (a container's volume is shown where
 * it is mounted). Returns its length with the NUL, 0 if unknown. */
static __always_inline long fd_path(struct task_struct *task, long fd, struct ce_proc *ev)
{
	__u32 zero = 0;
	char *buf = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *file = NULL;

	if (!buf || fd < 0 || bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xffff]) || !file)
		return 0;
	struct ce_walk w = {
		.dentry = BPF_CORE_READ(file, f_path.dentry),
		.vfsmnt = BPF_CORE_READ(file, f_path.mnt),
		.root = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.pos = CE_WALK_LEN - 1,
	};
	w.mnt = container_of(w.vfsmnt, struct mount, mnt);
	buf[CE_WALK_LEN - 1] = 0;
	bpf_loop(CE_WALK_DEPTH, walk_step, &w, 0);
	__u32 pos = w.pos;
	if (pos == CE_WALK_LEN - 1) { /* the root itself */
		pos -= 1;
		buf[pos] = '/';
	}
	if (w.cut)
		ev->cut = 1;
	__u32 size = CE_WALK_LEN - pos;
	if (size > CE_PATH_LEN) {
		ev->cut = 1;
		size = CE_PATH_LEN;
	}
	barrier_var(size); /* keep the mask below: the verifier needs it even where clang knows better */
	size &= CE_PATH_LEN * 2 - 1;
	if (bpf_probe_read_kernel(ev->data, size, buf + (pos & (CE_WALK_LEN - 1))))
		return 0;
	ev->data[(size - 1) & (CE_PATH_LEN - 1)] = 0; /* a cut path still ends */
	return size;
}

/* A relative open that succeeded: judged like an absolute one by the path it resolved to,
 * and a deny kills the opener here, before the call returns to it. */
static __always_inline int relative_exit(void *ctx, __u64 tid, long ret)
{
	__u8 *asked = bpf_map_lookup_elem(&open_relative, &tid);
	__u32 zero = 0;

	if (!asked)
		return 0;
	__u8 acc = *asked;
	bpf_map_delete_elem(&open_relative, &tid);
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 *config = bpf_map_lookup_elem(&file_config, &zero);
	struct ce_path_key *key = bpf_map_lookup_elem(&key_scratch, &zero);
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (ret < 0 || !config || !key || !ev)
		return 0; /* a failed relative open names no file */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	proc_common(ev, task, cgid, CE_PROC_OPEN);
	ev->access = acc;
	long n = fd_path(task, ret, ev);
	if (n <= 0)
		return 0;
	ev->path_len = n;
	if (n > CE_MATCH_LEN)
		n = CE_MATCH_LEN; /* a prefix of it: exact paths cannot match, prefixes can */
	if (bpf_probe_read_kernel(key->path, sizeof(key->path), ev->data))
		return 0;
	struct ce_verdict *best;
	if (!file_lookup(key, n, cgid, *config, acc, &best))
		return 0;
	file_decide(ev, best);
	ev->exit_code = ret;
	proc_send(ctx, ev, ev->verdict != CE_V_ALLOW);
	return 0;
}

static __always_inline int file_exit(void *ctx, long ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct ce_proc *ev = bpf_map_lookup_elem(&open_pending, &tid);

	if (!ev)
		return relative_exit(ctx, tid, ret);
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
