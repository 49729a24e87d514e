/* SPDX-License-Identifier: GPL-2.0 */
/*
 * process.bpf.h - what runs in the containers: every exec and every process exit in a
 * monitored cgroup, a per-cgroup exec count, and exec rules that kill a forbidden binary
 * before it runs any code of its own.
 *
 * Part of enforce_connect.bpf.o (included after path.bpf.h): it shares the scope
 * (`monitored`), the hold of a new container's first exec (`pending`), the rule counters and
 * the generation's lifecycle, and runs in the same sched_process_exec program as the hold, so
 * an exec costs one program run. Processes outside the monitored cgroups cost a hash
 * lookup and nothing else.
 *
 * An exec is judged by the file that runs (bprm->file: for a script, its interpreter, so
 * "#!/opt/forbidden" is an exec of /opt/forbidden), its path resolved from the file and its
 * identity (path.bpf.h), never by the name execve() was given: a link, another spelling, a
 * chroot, /proc/self/fd/N or execveat() all come to the same file. A file with no name left
 * (memfd_create, a deleted file) is `fileless`, and rules can ask for it. A bare dynamic
 * loader (ld-linux*.so* BIN) runs BIN without an exec of BIN: the first file it opens is
 * judged as its exec (file.bpf.h). A matching deny (not audit) sends SIGKILL from inside the
 * exec: the new program never runs, its parent sees it killed (wait status 9).
 *
 * An open deny holds only if no other process can reach the descriptor the killed opener
 * got, so where one applies to a container the calls that would share or lend descriptors
 * are refused (the caller, or the child it made, killed): clone(CLONE_FILES) without
 * CLONE_THREAD, pidfd_getfd(), and io_uring_setup() (io_uring's opens never reach the open
 * tracepoints; Docker 25's default seccomp profile refuses it too).
 */


/* A ce_proc is larger than the BPF stack: it is built here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_proc);
} proc_scratch SEC(".maps");

/* Files the agent hashed, by what they were when it did: the content hash rules they match. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CE_MAX_FLOWS);
	__type(key, struct ce_hash_key);
	__type(value, struct ce_hash);
} exec_hashes SEC(".maps");

/* Processes that exec'd a bare dynamic loader, until their first open (its program). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} loader_pending SEC(".maps");

/* The mount namespace of each monitored cgroup's last exec (CE_PC_NS_HOLD). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, __u32);
} exec_ns SEC(".maps");

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
	__u32 which = ev->type - 1; /* CE_PROC_EXEC, _EXIT, _OPEN, _REFUSE */
	__u64 *missed = bpf_map_lookup_elem(&proc_lost, &which);

	if (missed)
		__sync_fetch_and_add(missed, 1);
}

static __always_inline int proc_output(void *ctx, struct ce_proc *ev)
{
	__u64 size = (offsetof(struct ce_proc, data) + ev->path_len + ev->args_len + ev->given_len) & 2047; /* for the verifier */

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
		if (ev->type == CE_PROC_SOCKET)
			key.hash += ev->how; /* sockets of one kind */
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
	ev->given_len = 0;
	ev->fileless = 0;
	ev->how = 0;
	__builtin_memset(&ev->file, 0, sizeof(ev->file));
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_probe_read_kernel_str(ev->pcomm, sizeof(ev->pcomm), BPF_CORE_READ(parent, comm));
}

/* What a file is now (ce_hash_key), for exec_hashes. */
static __always_inline void hash_key(struct file *file, struct ce_hash_key *key)
{
	if (!file || !bpf_rdonly_cast)
		return;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = file->f_inode;
	if (!inode)
		return;
	key->dev = inode->i_sb->s_dev;
	key->ino = inode->i_ino;
	key->size = inode->i_size;
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		key->ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		key->ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec);
	}
}

/* Judge an exec of `file` (resolved in p) by the exec rules: the first match's bit, or -1;
 * *unhashed is set when that is a content hash rule and the file is new to exec_hashes (the
 * agent decides, once it has hashed it). */
static __always_inline int exec_judge(struct ce_pconfig *cfg, __u64 cgid, __u8 mon, struct file *file,
				      struct ce_rpath *p, struct task_struct *task, struct ce_proc *ev, int *unhashed)
{
	__u32 lens[3] = {p->len - 1, 0, 0};
	__u64 cand = scope_mask(cfg, CE_K_EXEC, cgid, mon);

	if (!cand)
		return -1;
	cand &= field_mask(cfg, CE_F_EXEC, p, (cfg->flags & CE_PC_IDS) ? identity(file) : NULL, NULL);
	if (!ev->fileless)
		cand &= ~cfg->fileless;
	struct task_struct *parent = task ? task->real_parent : NULL;
	cand = by_binary(cfg, cand, CE_F_EXEC_PARENT, parent, CE_W_PARENT, lens, 1);
	if (cand & cfg->sha) { /* a content hash rule is in play: is the file one the agent hashed? */
		struct ce_hash *known = bpf_map_lookup_elem(&exec_hashes, &ev->file);
		if (known) {
			cand &= known->mask | ~cfg->sha;
		} else {
			int bit = first_rule(cfg, CE_K_EXEC, cand, lens);
			if (bit >= 0 && bit < CE_PRULES && ((cfg->sha >> bit) & 1)) {
				*unhashed = 1; /* the hash decides: the agent, after hashing it */
				return -1;
			}
			cand &= ~cfg->sha;
		}
	}
	return first_rule(cfg, CE_K_EXEC, cand, lens);
}

/* Count the deciding rule and apply a deny: SIGKILL, taken before the call returns to the
 * process. Returns 1 if it was killed. */
static __always_inline int decide_rule(struct ce_pconfig *cfg, __u32 kind, int bit, struct ce_proc *ev)
{
	struct ce_prule *rule = prule_at(cfg, kind, bit);

	if (!rule)
		return 0;
	count_slot(rule->slot);
	ev->slot = rule->slot;
	if (rule->action != CE_DENY)
		return 0;
	ev->verdict = rule->audit ? CE_V_AUDIT : CE_V_DENY;
	return !rule->audit && bpf_send_signal(CE_SIGKILL) == 0;
}

/* argv (the process's own, from its memory) into ev->data after the path. */
static __always_inline void args_out(struct ce_proc *ev, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start), end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	__u32 off = ev->path_len & (CE_PATH_LEN * 2 - 1); /* for the verifier: at most CE_PATH_LEN */
	__u32 size = len < CE_ARGS_LEN ? len : CE_ARGS_LEN - 1;

	if (len >= CE_ARGS_LEN)
		ev->cut = 1;
	size &= CE_ARGS_LEN - 1; /* for the verifier: at most the field */
	if (size && bpf_probe_read_user(ev->data + off, size, (void *)start) == 0)
		ev->args_len = size;
}

/* A name (kernel string) into ev->data after argv: the name execve() was given. */
static __always_inline void given_out(struct ce_proc *ev, const char *name, int user)
{
	__u32 off = (ev->path_len & (CE_PATH_LEN * 2 - 1)) + (ev->args_len & (CE_ARGS_LEN - 1));
	long n = user ? bpf_probe_read_user_str(ev->data + (off & (CE_DATA_LEN / 2 - 1)), CE_PATH_LEN, name)
		      : bpf_probe_read_kernel_str(ev->data + (off & (CE_DATA_LEN / 2 - 1)), CE_PATH_LEN, name);
	if (n > 0)
		ev->given_len = n;
	if (n == CE_PATH_LEN)
		ev->cut = 1;
}

/* A bare dynamic loader ("ld-linux-x86-64.so.2", "ld-musl-x86_64.so.1", "ld.so") by its name. */
static __always_inline int loader_named(struct ce_rpath *p)
{
	char *buf = bpf_map_lookup_elem(&walks, &p->which);
	__u32 at = p->leaf;

	if (!buf || at > CE_WALK_LEN - 8)
		return 0;
	char a = buf[at & (CE_WALK_LEN - 1)], b = buf[(at + 1) & (CE_WALK_LEN - 1)], c = buf[(at + 2) & (CE_WALK_LEN - 1)];
	return a == 'l' && b == 'd' && (c == '-' || c == '.');
}

/* Whether this exec is its cgroup's first in the process's mount namespace (a container's
 * runtime execs in the host's, its entrypoint in the container's): the files the rules'
 * exact paths name there are not known yet. */
static __always_inline int new_namespace(struct task_struct *task, __u64 cgid)
{
	__u32 ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	__u32 *seen = bpf_map_lookup_elem(&exec_ns, &cgid);

	if (seen && *seen == ns)
		return 0;
	bpf_map_update_elem(&exec_ns, &cgid, &ns, BPF_ANY);
	return 1;
}

/* An exec in a monitored cgroup: judge it, count it, report it; in a container the agent
 * has not listed yet (`pending`), stop it before its program runs, if its record (which
 * says so) went out. */
static __always_inline void proc_exec(void *ctx, struct task_struct *task, struct linux_binprm *bprm, __u64 cgid,
				      __u8 mon)
{
	__u32 zero = 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	struct ce_pconfig *cfg = bpf_map_lookup_elem(&pconfig, &zero);
	struct ce_rpath p = {};
	__u64 one = 1;
	int killed = 0;

	__u64 *count = bpf_map_lookup_elem(&exec_counts, &cgid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&exec_counts, &cgid, &one, BPF_NOEXIST);
	if (!ev || !cfg)
		return;
	proc_common(ev, task, cgid, CE_PROC_EXEC);
	struct file *file = bprm->file;
	int runtime = runtime_task(cfg, task), unhashed = 0;
	if (runtime)
		ev->how = CE_HOW_RUNTIME;
	hash_key(file, &ev->file);
	if (resolve(file, CE_W_MAIN, &p) == 0) {
		ev->path_len = path_out(&p, ev->data, &ev->cut);
		ev->fileless = fileless(file);
		if ((cfg->flags & CE_PC_ON) && !runtime)
			killed = decide_rule(cfg, CE_K_EXEC, exec_judge(cfg, cgid, mon, file, &p, task, ev, &unhashed), ev);
		if (!killed && (cfg->flags & CE_PC_LOADER) && loader_named(&p)) {
			__u32 tgid = ev->pid;
			__u8 yes = 1;
			bpf_map_update_elem(&loader_pending, &tgid, &yes, BPF_ANY);
		}
	}
	args_out(ev, task);
	given_out(ev, BPF_CORE_READ(bprm, filename), 0);
	if (!ev->path_len) { /* not resolved (an old kernel): the name as given stands in */
		ev->path_len = ev->given_len;
		ev->given_len = 0;
	}
	int pending_here = bpf_map_lookup_elem(&pending, &cgid) != NULL;
	int new_ns = !killed && (cfg->flags & CE_PC_NS_HOLD) && new_namespace(task, cgid);
	ev->held = killed ? 0 : (pending_here ? 1 : 0) | (new_ns ? 2 : 0) | (unhashed ? 4 : 0);
	if (proc_send(ctx, ev, ev->verdict != CE_V_ALLOW || ev->held) == 0 && ev->held)
		bpf_send_signal(CE_SIGSTOP);
}

/* The first file a bare dynamic loader opened is its program: judged as an exec of it. */
static __always_inline int loader_exec(void *ctx, struct ce_pconfig *cfg, struct task_struct *task, struct file *file,
				       long fd, __u64 cgid, __u8 mon)
{
	__u32 zero = 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	struct ce_rpath p = {};

	if (!ev || resolve(file, CE_W_MAIN, &p) != 0)
		return 0;
	proc_common(ev, task, cgid, CE_PROC_EXEC);
	ev->how = CE_HOW_LOADER;
	ev->path_len = path_out(&p, ev->data, &ev->cut);
	ev->fileless = fileless(file);
	hash_key(file, &ev->file);
	int unhashed = 0;
	decide_rule(cfg, CE_K_EXEC, exec_judge(cfg, cgid, mon, file, &p, task, ev, &unhashed), ev);
	ev->held = unhashed ? 4 : 0; /* held until the agent has hashed its program (its descriptor: exit_code) */
	ev->exit_code = fd;
	args_out(ev, task);
	struct ce_rpath lp = {};
	struct file *exe = exe_of(task);
	if (exe && resolve(exe, CE_W_BINARY, &lp) == 0) { /* the loader, as "given" */
		char *buf = bpf_map_lookup_elem(&walks, &lp.which);
		if (buf)
			given_out(ev, buf + (lp.pos & (CE_WALK_LEN - 1)), 0);
	}
	if (proc_send(ctx, ev, 1) == 0 && ev->held)
		bpf_send_signal(CE_SIGSTOP);
	return 0;
}

/* The first enforcing open deny that applies to this container: a call that would share
 * or lend descriptors is refused in its name. Its bit, or -1. */
static __always_inline int refusing(struct ce_pconfig *cfg, __u64 cgid, __u8 mon)
{
	__u64 denies = scope_mask(cfg, CE_K_OPEN, cgid, mon) & cfg->denies[CE_K_OPEN];

	for (int bit = 0; bit < CE_PRULES; bit++)
		if ((denies >> bit) & 1)
			return bit;
	return -1;
}

/* Report a refused call (the killing is the caller's). */
/* One refused call to the agent (CE_HOW_*; slot: the deciding rule's, 0 for a bound of the
 * kernel's own): the one record every refusal sends. */
static __always_inline void refusal_report(void *ctx, __u64 cgid, __u32 slot, __u8 how)
{
	__u32 zero = 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);

	if (!ev)
		return;
	proc_common(ev, bpf_get_current_task_btf(), cgid, CE_PROC_REFUSE);
	ev->how = how;
	ev->slot = slot;
	ev->verdict = CE_V_DENY;
	proc_send(ctx, ev, 1);
}

static __always_inline void refused(void *ctx, struct ce_pconfig *cfg, int bit, __u64 cgid, __u8 how)
{
	struct ce_prule *rule = prule_at(cfg, CE_K_OPEN, bit);

	if (rule)
		refusal_report(ctx, cgid, rule->slot, how);
}

/* The refusal's checks: a monitored container that an enforcing open deny applies to. */
static __always_inline int refusal_due(struct ce_pconfig **cfgp, __u64 *cgidp, __u32 need)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	struct ce_pconfig *cfg = bpf_map_lookup_elem(&pconfig, &zero);

	if (!mon || !cfg || (cfg->flags & need) != need || !cfg->denies[CE_K_OPEN] ||
	    runtime_task(cfg, bpf_get_current_task_btf()))
		return -1;
	*cfgp = cfg;
	*cgidp = cgid;
	return refusing(cfg, cgid, *mon);
}

extern int bpf_send_signal_task(struct task_struct *task, int sig, enum pid_type type, __u64 value) __ksym __weak;

/* sock.bpf.h's: a packet socket deny refuses the same calls as an open deny */
static __always_inline int packet_refuse_call(void *ctx, __u32 need, __u8 how);
static __always_inline struct ce_rule *packet_deny(__u32 need, __u64 *cgidp);
static __always_inline void packet_refused(void *ctx, struct ce_rule *rule, __u64 cgid, __u8 how);

SEC("tp_btf/sched_process_fork")
int BPF_PROG(crossedge_fork, struct task_struct *parent, struct task_struct *child)
{
	struct ce_pconfig *cfg;
	__u64 cgid = 0;

	if (child->files != parent->files || child->tgid == parent->tgid)
		return 0; /* its own table, or a thread of the same process */
	int bit = refusal_due(&cfg, &cgid, CE_PC_ON);
	if (bit < 0) {
		struct ce_rule *rule = packet_deny(CE_PC_ON, &cgid);
		if (!rule)
			return 0;
		if (bpf_send_signal_task) {
			bpf_send_signal_task(child, CE_SIGKILL, PIDTYPE_TGID, 0);
			packet_refused(ctx, rule, cgid, CE_HOW_CLONE_FILES);
		} else {
			bpf_send_signal(CE_SIGKILL);
			packet_refused(ctx, rule, cgid, CE_HOW_CLONE_PARENT);
		}
		return 0;
	}
	if (bpf_send_signal_task) { /* the child dies before it runs an instruction */
		bpf_send_signal_task(child, CE_SIGKILL, PIDTYPE_TGID, 0);
		refused(ctx, cfg, bit, cgid, CE_HOW_CLONE_FILES);
	} else { /* a kernel before 6.13: the caller instead (the agent kills the child) */
		bpf_send_signal(CE_SIGKILL);
		refused(ctx, cfg, bit, cgid, CE_HOW_CLONE_PARENT);
	}
	return 0;
}

/* Kill the caller of a call an open deny (or a packet socket deny) refuses, and report it. */
static __always_inline int refuse_call(void *ctx, __u32 need, __u8 how)
{
	struct ce_pconfig *cfg;
	__u64 cgid;
	int bit = refusal_due(&cfg, &cgid, need);

	if (bit >= 0) {
		if (bpf_send_signal(CE_SIGKILL) == 0)
			refused(ctx, cfg, bit, cgid, how);
		return 0;
	}
	packet_refuse_call(ctx, need, how);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_pidfd_getfd")
int crossedge_getfd(struct trace_event_raw_sys_enter *ctx)
{
	return refuse_call(ctx, CE_PC_ON, CE_HOW_PIDFD_GETFD);
}

SEC("tracepoint/syscalls/sys_enter_io_uring_setup")
int crossedge_uring(struct trace_event_raw_sys_enter *ctx)
{
	return refuse_call(ctx, CE_PC_ON | CE_PC_IO_URING, CE_HOW_IO_URING);
}

#define CE_TS_COMPAT 0x0002 /* x86 thread_info.status: in a 32-bit system call */
#define CE_X32_BIT 0x40000000 /* x32 system calls' numbers */

/* 32-bit and x32 system calls: the kernel hides them from every syscall tracepoint, so an
 * open, rename, io_uring_setup() or pidfd_getfd() made that way would pass unjudged. The
 * raw sys_enter sees them: where an open deny applies the caller is killed (like
 * io_uring_setup()'s), and a 32-bit rename anywhere turns the memory of files no rule
 * names off (quiet.bpf.h: counted in flight, never ended, until the agent attaches anew). */
SEC("tp_btf/sys_enter")
int BPF_PROG(crossedge_compat, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!(task->thread_info.status & CE_TS_COMPAT) && !(id & CE_X32_BIT))
		return 0;
	if (id == 38 || id == 302 || id == 353 || id == (CE_X32_BIT | 82) || id == (CE_X32_BIT | 264) ||
	    id == (CE_X32_BIT | 316)) /* rename, renameat, renameat2 */
		quiet_renaming(1);
	return refuse_call(ctx, CE_PC_ON, CE_HOW_COMPAT);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(crossedge_exit, struct task_struct *task, bool group_dead)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();

	if (!group_dead || !bpf_map_lookup_elem(&monitored, &cgid))
		return 0;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&loader_pending, &tgid);
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, task, cgid, CE_PROC_EXIT);
	ev->exit_code = BPF_CORE_READ(task, signal, group_exit_code) ?: BPF_CORE_READ(task, exit_code);
	ev->lifetime_ns = ev->ts_ns - ev->start_ns;
	proc_send(ctx, ev, 0);
	return 0;
}
