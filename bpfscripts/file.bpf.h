/* SPDX-License-Identifier: GPL-2.0 */
/*
 * file.bpf.h - the opens that matter in the containers, judged by the file that was
 * opened, and file rules that kill the opener before the call returns.
 *
 * Part of enforce_connect.bpf.o (included after path.bpf.h and process.bpf.h): it shares
 * the scope (`monitored`), the rule counters, the process record (`ce_proc`, type
 * CE_PROC_OPEN, the path in `data`, the result in `exit_code`), its perf array (`procs`)
 * and the kernel folding of like records (`proc_flows`). This kernel has no fs
 * tracepoints, no kprobes, and refuses fentry and LSM programs, so the hooks are the exit
 * tracepoints of open(), openat(), openat2(), creat() and open_by_handle_at(): the call
 * has made its descriptor, so the program judges the `struct file` behind it, its path
 * resolved and its identity (path.bpf.h), never the name the process gave. Nothing is read
 * from user memory for a call that succeeded.
 *
 * What it asked for comes from the file too: read and write from its mode, create when the
 * open made the file (FMODE_CREATED), truncate from O_TRUNC in the call's flags (whatever
 * the access mode: O_RDONLY|O_TRUNC truncates as well).
 * Outside the monitored cgroups an open costs a hash lookup; inside, the walk (a helper call
 * a name), one lookup in `pat_fwd` and, while a rule naming a suffix is in play, one in
 * `pat_rev`. An open is recorded when a rule or a watch names it, and sent or counted
 * with its group like an exec. A deny (not audit) sends SIGKILL here: the open has happened
 * (tracepoints cannot fail a call: a create or truncate it asked for is done), but the
 * process dies before it returns to user space and never reads or writes a byte through it.
 * process.bpf.h refuses the calls that would let another process reach the descriptor.
 * A call that failed has no file: it is judged by the name it gave (absolute names only),
 * reported, never killed for (nothing was opened).
 */

#define CE_O_ACCMODE 3
#define CE_O_WRONLY 1
#define CE_O_RDWR 2
#define CE_O_CREAT 0100
#define CE_O_TRUNC 01000
#define CE_HOW_AS_GIVEN 6 /* open: it failed (no file): judged by the name it gave */
#define CE_EPERM 1
#define CE_AT_FDCWD -100

#define CE_CALL_OPEN 0
#define CE_CALL_OPENAT 1
#define CE_CALL_OPENAT2 2
#define CE_CALL_CREAT 3
#define CE_CALL_BY_HANDLE 4

/* The file behind a descriptor of the current process. */
static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = task->files ? task->files->fdt : NULL;
	struct file *file = NULL;

	if (!fdt || fd < 0 || fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffff]))
		return NULL;
	return file;
}

/* The call's flags argument (saved registers: what the kernel used, not user memory; but
 * openat2's, which is a struct in user memory). */
static __always_inline __u64 call_flags(struct task_struct *task, __u32 call)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 flags = 0;

	if (!regs)
		return 0;
	switch (call) { /* (saved registers read directly: the first three are the syscall's on every arch) */
	case CE_CALL_OPEN:
		return PT_REGS_PARM2(regs);
	case CE_CALL_OPENAT:
	case CE_CALL_BY_HANDLE:
		return PT_REGS_PARM3(regs);
	case CE_CALL_OPENAT2: /* struct open_how starts with its flags */
		bpf_probe_read_user(&flags, sizeof(flags), (void *)PT_REGS_PARM3(regs));
		return flags;
	default:
		return CE_O_CREAT | CE_O_WRONLY | CE_O_TRUNC; /* creat() */
	}
}

/* What a successful open got: read and write from the file's mode, create if it made it,
 * truncate if it asked to. */
static __always_inline __u8 access_of(struct file *file, __u64 flags)
{
	if (!bpf_rdonly_cast)
		return 0;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	__u32 mode = file->f_mode;
	__u8 acc = 0;

	if (mode & CE_FMODE_READ)
		acc |= CE_ACC_READ;
	if (mode & CE_FMODE_WRITE)
		acc |= CE_ACC_WRITE;
	if (mode & CE_FMODE_CREATED)
		acc |= CE_ACC_CREATE;
	if ((flags & CE_O_TRUNC) && (mode & (CE_FMODE_READ | CE_FMODE_WRITE)))
		acc |= CE_ACC_TRUNC;
	return acc;
}

/* What a failed open asked for, from its flags. */
static __always_inline __u8 asked_for(__u64 flags)
{
	__u8 acc = CE_ACC_READ;

	if ((flags & CE_O_ACCMODE) == CE_O_WRONLY)
		acc = CE_ACC_WRITE;
	else if ((flags & CE_O_ACCMODE) == CE_O_RDWR)
		acc |= CE_ACC_WRITE;
	if (flags & CE_O_CREAT)
		acc |= CE_ACC_CREATE;
	if (flags & CE_O_TRUNC)
		acc |= CE_ACC_TRUNC;
	return acc;
}

/* The open rules naming any of these accesses. */
static __always_inline __u64 access_mask(struct ce_pconfig *cfg, __u8 acc)
{
	__u64 mask = 0;

	for (int bit = 0; bit < CE_ACCESSES; bit++)
		if (acc & (1 << bit))
			mask |= cfg->access[bit];
	return mask;
}

/* Judge an open of the path in p (and, if known, its file): the rule's bit or -1; *watch
 * gets the accesses watches report there. */
static __always_inline int open_judge(struct ce_pconfig *cfg, __u64 cgid, __u8 mon, struct ce_rpath *p,
				      struct file *file, struct task_struct *task, __u8 acc, __u8 *watch, __u64 *named)
{
	__u32 lens[3] = {p->len - 1, 0, 0};
	__u64 cand = scope_mask(cfg, CE_K_OPEN, cgid, mon) & access_mask(cfg, acc);

	*named = field_mask(cfg, CE_F_OPEN, p, file && (cfg->flags & CE_PC_IDS) ? identity(file) : NULL, watch);
	cand &= *named;
	cand = by_binary(cfg, cand, CE_F_OPEN_BINARY, task, CE_W_BINARY, lens, 1);
	cand = by_binary(cfg, cand, CE_F_OPEN_PARENT, task->real_parent, CE_W_PARENT, lens, 2);
	return first_rule(cfg, CE_K_OPEN, cand, lens);
}

/* A name argument (user memory) into ev->data at `off`; its bytes with the NUL. */
static __always_inline __u16 name_out(struct ce_proc *ev, __u32 off, const char *name)
{
	long n = bpf_probe_read_user_str(ev->data + (off & (CE_DATA_LEN / 2 - 1)), CE_PATH_LEN, name);

	if (n == CE_PATH_LEN)
		ev->cut = 1;
	return n > 0 ? n : 0;
}

/* The descriptor a "/proc/self/fd/N" or "/dev/fd/N" name reopens, or -1. */
static __always_inline long fd_named(const char *name)
{
	int at = 0;
	long fd = 0;

	if (name[0] == '/' && name[1] == 'p' && name[2] == 'r' && name[3] == 'o' && name[4] == 'c' && name[5] == '/' &&
	    name[6] == 's' && name[7] == 'e' && name[8] == 'l' && name[9] == 'f' && name[10] == '/' && name[11] == 'f' &&
	    name[12] == 'd' && name[13] == '/')
		at = 14;
	else if (name[0] == '/' && name[1] == 'd' && name[2] == 'e' && name[3] == 'v' && name[4] == '/' &&
		 name[5] == 'f' && name[6] == 'd' && name[7] == '/')
		at = 8;
	else
		return -1;
	for (int i = 0; i < 8; i++) {
		char c = name[(at + i) & 31];
		if (c == 0)
			return i ? fd : -1;
		if (c < '0' || c > '9')
			return -1;
		fd = fd * 10 + (c - '0');
	}
	return -1;
}

/* A failed open: judged by the name it gave (absolute names only; a /proc/self/fd/N reopen by
 * the file behind the descriptor), reported, nobody killed. */
static __always_inline int failed_open(void *ctx, struct ce_pconfig *cfg, struct task_struct *task, __u64 cgid,
				       __u8 mon, long ret, __u32 call)
{
	__u32 zero = 0, main = CE_W_MAIN, tmp = CE_W_PARENT;
	char *buf = bpf_map_lookup_elem(&walks, &main);
	char *given = bpf_map_lookup_elem(&walks, &tmp);
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct file *file = NULL;

	if (!buf || !given)
		return 0;
	const char *name = (const char *)(call == CE_CALL_OPEN || call == CE_CALL_CREAT ? PT_REGS_PARM1_CORE_SYSCALL(regs)
											: PT_REGS_PARM2_CORE_SYSCALL(regs));
	long n = bpf_probe_read_user_str(given, CE_PATH_LEN, name);
	if (n <= 1 || given[0] != '/')
		return 0; /* a relative name that opened nothing names nothing */
	struct ce_rpath p = {.pos = CE_WALK_LEN - CE_PATH_LEN, .len = n, .which = CE_W_MAIN, .cut = n == CE_PATH_LEN};
	long fd = fd_named(given);
	if (fd >= 0 && (file = fd_file(task, fd)) && resolve(file, CE_W_MAIN, &p) == 0) {
		/* judged by its file (a reopen refused: an immutable file) */
	} else if (bpf_probe_read_kernel(buf + (CE_WALK_LEN - CE_PATH_LEN), n & (CE_PATH_LEN - 1), given)) {
		return 0;
	} else {
		file = NULL;
		p.pos = CE_WALK_LEN - CE_PATH_LEN;
	}
	__u8 watch = 0, acc = asked_for(call_flags(task, call));
	__u64 named;
	int bit = open_judge(cfg, cgid, mon, &p, file, task, acc, &watch, &named);
	int refused = ret == -CE_EPERM && (cfg->flags & CE_PC_GUARD); /* maybe an immutable file: the agent looks */
	if (bit < 0 && !(watch & acc) && !refused)
		return 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, task, cgid, CE_PROC_OPEN);
	ev->how = CE_HOW_AS_GIVEN;
	ev->access = acc;
	ev->exit_code = ret;
	ev->path_len = path_out(&p, ev->data, &ev->cut);
	if (file) /* the name it gave, after the file's path */
		ev->given_len = name_out(ev, ev->path_len, name);
	struct ce_prule *rule = prule_at(cfg, CE_K_OPEN, bit);
	if (rule) {
		count_slot(rule->slot);
		ev->slot = rule->slot;
		if (rule->action == CE_DENY)
			ev->verdict = rule->audit ? CE_V_AUDIT : CE_V_DENY;
	}
	proc_send(ctx, ev, ev->verdict != CE_V_ALLOW);
	return 0;
}

static __always_inline int open_exit(void *ctx, long ret, __u32 call)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 zero = 0;
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);

	if (!mon)
		return 0;
	struct ce_pconfig *cfg = bpf_map_lookup_elem(&pconfig, &zero);
	if (!cfg || !(cfg->flags & CE_PC_ON))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (runtime_task(cfg, task))
		return 0; /* the runtime's, setting the container up */
	if (ret < 0)
		return (cfg->flags & CE_PC_OPENS) && call != CE_CALL_BY_HANDLE
			       ? failed_open(ctx, cfg, task, cgid, *mon, ret, call)
			       : 0;
	struct file *file = fd_file(task, ret);
	if (!file)
		return 0;
	if (cfg->flags & CE_PC_LOADER) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (bpf_map_lookup_elem(&loader_pending, &tgid)) {
			bpf_map_delete_elem(&loader_pending, &tgid);
			return loader_exec(ctx, cfg, task, file, ret, cgid, *mon);
		}
	}
	if (!(cfg->flags & CE_PC_OPENS))
		return 0;
	struct ce_quiet quiet_as = {};
	int describable = quiet_describe(file, &quiet_as) == 0;
	if (describable && quiet_before(&quiet_as))
		return 0; /* a file no rule names, unchanged since (quiet.bpf.h) */
	__u8 acc = access_of(file, call_flags(task, call));
	struct ce_rpath p = {};
	if (!acc || resolve(file, CE_W_MAIN, &p) != 0)
		return 0; /* (an O_PATH descriptor reads and writes nothing) */
	__u8 watch = 0;
	__u64 named = 0;
	int bit = open_judge(cfg, cgid, *mon, &p, file, task, acc, &watch, &named);
	if (describable && !named && !watch && p.rooted)
		quiet_remember(&quiet_as);
	if (bit < 0 && !(watch & acc))
		return 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!ev)
		return 0;
	proc_common(ev, task, cgid, CE_PROC_OPEN);
	ev->access = acc;
	ev->exit_code = ret;
	ev->fileless = fileless(file);
	ev->path_len = path_out(&p, ev->data, &ev->cut);
	decide_rule(cfg, CE_K_OPEN, bit, ev);
	proc_send(ctx, ev, ev->verdict != CE_V_ALLOW);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int crossedge_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx, ctx->ret, CE_CALL_OPENAT);
}

SEC("tracepoint/syscalls/sys_exit_open")
int crossedge_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx, ctx->ret, CE_CALL_OPEN);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int crossedge_openat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx, ctx->ret, CE_CALL_OPENAT2);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int crossedge_creat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx, ctx->ret, CE_CALL_CREAT);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int crossedge_handle_exit(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx, ctx->ret, CE_CALL_BY_HANDLE);
}

/* -- calls that change a file in place ------------------------------------------------
 * Where the agent made files immutable (monitor/guard.py: a write deny on an exact path), the
 * kernel refuses these with EPERM whatever name they use; each refusal in a monitored
 * container is reported with the names it gave (or the file, for a descriptor), and the
 * agent looks them up in the container to tell which protected file it was. */

/* name: the first name's argument (-1: a descriptor in `fd_arg`), second: the second's (-1:
 * none), dir: the *at() directory descriptor's (-1: none). */
static __always_inline int write_refused(void *ctx, long ret, __u8 how, int name, int second, int dir, int fd_arg)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();

	if (how == CE_HOW_RENAME)
		quiet_renaming(-1); /* (quiet.bpf.h: done, whatever it did) */
	if (ret != -CE_EPERM || !bpf_map_lookup_elem(&monitored, &cgid))
		return 0;
	struct ce_pconfig *cfg = bpf_map_lookup_elem(&pconfig, &zero);
	struct task_struct *task = bpf_get_current_task_btf();
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);
	if (!cfg || !(cfg->flags & CE_PC_GUARD) || !ev || runtime_task(cfg, task))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 args[5] = {PT_REGS_PARM1_CORE_SYSCALL(regs), PT_REGS_PARM2_CORE_SYSCALL(regs),
			 PT_REGS_PARM3_CORE_SYSCALL(regs), PT_REGS_PARM4_CORE_SYSCALL(regs), 0};
	proc_common(ev, task, cgid, CE_PROC_OPEN);
	ev->how = how;
	ev->access = how == CE_HOW_TRUNCATE ? CE_ACC_TRUNC : CE_ACC_WRITE;
	ev->exit_code = ret;
	if (name >= 0 && name < 4) {
		ev->path_len = name_out(ev, 0, (const char *)args[name]);
	} else if (fd_arg >= 0 && fd_arg < 4) {
		struct ce_rpath p = {};
		struct file *file = fd_file(task, (long)args[fd_arg]);
		if (!file || resolve(file, CE_W_MAIN, &p) != 0)
			return 0;
		ev->path_len = path_out(&p, ev->data, &ev->cut);
	}
	if (second >= 0 && second < 4)
		ev->given_len = name_out(ev, ev->path_len, (const char *)args[second]);
	ev->lifetime_ns = dir >= 0 && dir < 4 ? (__s64)(int)args[dir] : (__s64)CE_AT_FDCWD;
	proc_send(ctx, ev, 1);
	return 0;
}

#define CE_REFUSED(call, how, name, second, dir, fd)                                \
	SEC("tracepoint/syscalls/sys_exit_" #call)                                     \
	int crossedge_w_##call(struct trace_event_raw_sys_exit *ctx)                   \
	{                                                                              \
		return write_refused(ctx, ctx->ret, how, name, second, dir, fd);       \
	}

CE_REFUSED(truncate, CE_HOW_TRUNCATE, 0, -1, -1, -1)
CE_REFUSED(ftruncate, CE_HOW_TRUNCATE, -1, -1, -1, 0)
CE_REFUSED(rename, CE_HOW_RENAME, 0, 1, -1, -1)
CE_REFUSED(renameat, CE_HOW_RENAME, 1, 3, 0, -1)
CE_REFUSED(renameat2, CE_HOW_RENAME, 1, 3, 0, -1)
CE_REFUSED(unlink, CE_HOW_UNLINK, 0, -1, -1, -1)
CE_REFUSED(unlinkat, CE_HOW_UNLINK, 1, -1, 0, -1)
CE_REFUSED(link, CE_HOW_LINK, 0, 1, -1, -1)
CE_REFUSED(linkat, CE_HOW_LINK, 1, 3, 0, -1)
CE_REFUSED(chmod, CE_HOW_CHMOD, 0, -1, -1, -1)
CE_REFUSED(fchmod, CE_HOW_CHMOD, -1, -1, -1, 0)
CE_REFUSED(fchmodat, CE_HOW_CHMOD, 1, -1, 0, -1)
CE_REFUSED(chown, CE_HOW_CHOWN, 0, -1, -1, -1)
CE_REFUSED(lchown, CE_HOW_CHOWN, 0, -1, -1, -1)
CE_REFUSED(fchown, CE_HOW_CHOWN, -1, -1, -1, 0)
CE_REFUSED(fchownat, CE_HOW_CHOWN, 1, -1, 0, -1)

/* A rename's entry: nothing the kernel remembers of files no rule names is believed until
 * its exit (quiet.bpf.h). */
#define CE_RENAMING(call)                                                              \
	SEC("tracepoint/syscalls/sys_enter_" #call)                                    \
	int crossedge_r_##call(void *ctx)                                              \
	{                                                                              \
		quiet_renaming(1);                                                     \
		return 0;                                                              \
	}

CE_RENAMING(rename)
CE_RENAMING(renameat)
CE_RENAMING(renameat2)
