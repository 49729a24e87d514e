// SPDX-License-Identifier: GPL-2.0
/*
 * unix_connect.bpf.c - connect() to a unix socket by path, judged by the unix socket rules
 * (`unix_path: /var/run/docker.sock` deny -> EPERM), for the containers in scope.
 *
 * cgroup/connect_unix and cgroup/sendmsg_unix (a datagram sent with an address) exist from
 * Linux 6.7; libbpf 1.1 and bpftool 7.1 predate them, so this object is apart from
 * enforce_connect.bpf.o: monitor/kernel/unix_hook.py opens it with libbpf, sets each
 * program's type and attach type itself, has it use the maps enforce_connect.bpf.o pinned
 * (`monitored`, `unix_rules`, `counters`, `procs`, `proc_lost`) and attaches each by a
 * pinned cgroup link where the connect programs are.
 *
 * The path is judged as the process wrote it (sun_path, up to its first NUL; an abstract
 * name as "@" and its bytes): the hook runs before the kernel looks the path up. The rule's
 * path is what it matches (the agent writes every spelling it knows for it; README: what a
 * deny by path does not hold against).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "enforce_connect.h"

char LICENSE[] SEC("license") = "GPL";

#define CE_SUN_PATH 108
#define CE_RAW_AT 128 /* where in a record's data the address is read before its name is written */
#define CE_EPERM 1

#include "shared_maps.bpf.h" /* enforce_connect.bpf.o's, pinned: libbpf is given them */

/* This object's own: a record is larger than the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_proc);
} unix_scratch SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

static __always_inline int judge_unix(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	struct ce_proc *ev = bpf_map_lookup_elem(&unix_scratch, &zero);

	if (!mon || !ev)
		return 1;
	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	struct sockaddr_un *un = bpf_rdonly_cast(sa->uaddr, bpf_core_type_id_kernel(struct sockaddr_un));
	__u32 len = sa->uaddrlen; /* with sun_family's two bytes */
	len = len > 2 ? len - 2 : 0;
	if (len > CE_SUN_PATH)
		len = CE_SUN_PATH;
	char *name = ev->data, *raw = ev->data + CE_RAW_AT;
	if (bpf_probe_read_kernel(raw, CE_SUN_PATH, un->sun_path))
		return 1;
	/* the name: a path up to its NUL, or an abstract one ("\0name", len bytes) as "@name" */
	int abstract = raw[0] == 0 && len > 1;
	__u64 hash = 0xcbf29ce484222325ULL;
	__u32 n = 0;
	for (__u32 i = 0; i < CE_SUN_PATH; i++) {
		char c = abstract && i == 0 ? '@' : raw[i];
		if (i >= len || (!abstract && c == 0))
			break;
		name[i] = c;
		hash = (hash ^ (__u8)c) * 0x100000001b3ULL;
		n = i + 1;
	}
	if (n == 0)
		return 1; /* an unnamed (autobind) address */
	struct ce_unix_key key = {.cgroup_id = cgid, .hash = hash};
	struct ce_rule *best = NULL;
	if (*mon & CE_MON_OWN)
		best = bpf_map_lookup_elem(&unix_rules, &key);
	key.cgroup_id = 0;
	best = better(best, bpf_map_lookup_elem(&unix_rules, &key));
	if (!best)
		return 1;
	__u8 verdict = best->action == CE_DENY ? (best->audit ? CE_V_AUDIT : CE_V_DENY) : CE_V_ALLOW;
	__u32 slot = best->slot;
	__u64 *count = bpf_map_lookup_elem(&counters, &slot);
	if (count)
		*count += 1;

	/* the report: a ce_proc of type CE_PROC_SOCKET, kind CE_SOCK_UNIX, its name in data */
	__u64 pid_tgid = bpf_get_current_pid_tgid(), ugid = bpf_get_current_uid_gid();
	struct task_struct *task = bpf_get_current_task_btf();
	__builtin_memset(ev, 0, offsetof(struct ce_proc, data));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	ev->type = CE_PROC_SOCKET;
	ev->how = CE_SOCK_UNIX;
	ev->pid = pid_tgid >> 32;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->start_ns = BPF_CORE_READ(task, group_leader, start_time);
	ev->uid = ugid;
	ev->gid = ugid >> 32;
	ev->slot = slot;
	ev->verdict = verdict;
	ev->exit_code = verdict == CE_V_DENY ? -CE_EPERM : 0;
	ev->lifetime_ns = (__u64)1 << 32 | (__u64)ctx->type << 16; /* AF_UNIX, the socket's type */
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_probe_read_kernel_str(ev->pcomm, sizeof(ev->pcomm), BPF_CORE_READ(task, real_parent, comm));
	name[n & (CE_RAW_AT - 1)] = 0;
	ev->path_len = (n & (CE_RAW_AT - 1)) + 1;
	__u64 size = (offsetof(struct ce_proc, data) + ev->path_len) & 2047;
	if (bpf_perf_event_output(ctx, &procs, BPF_F_CURRENT_CPU, ev, size)) {
		__u32 which = CE_PROC_SOCKET - 1;
		__u64 *missed = bpf_map_lookup_elem(&proc_lost, &which);
		if (missed)
			__sync_fetch_and_add(missed, 1);
	}
	return verdict == CE_V_DENY ? 0 : 1;
}

SEC("cgroup/connect_unix")
int crossedge_unix(struct bpf_sock_addr *ctx)
{
	return judge_unix(ctx);
}

SEC("cgroup/sendmsg_unix")
int crossedge_unix_dg(struct bpf_sock_addr *ctx)
{
	return judge_unix(ctx);
}
