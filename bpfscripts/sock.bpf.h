/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sock.bpf.h - the sockets a container can send with past the connect() and sendto()
 * judges: raw IP, AF_PACKET, ICMP "ping" and SCTP sockets, judged when they are made.
 *
 * crossedge_sock (cgroup/sock_create, attached with the connect programs) runs when a
 * process in a monitored container makes an AF_INET or AF_INET6 socket: a raw, ping or SCTP
 * one is judged by the socket rules (`sock_rules`: the container's own, then every
 * container's, best rank first) and reported on `procs` whatever the verdict; a deny makes
 * socket() fail with EPERM. AF_PACKET sockets never reach that hook (packet_create has
 * none): crossedge_psock, on the socket() syscall's tracepoint, judges them and kills the
 * caller of a denied one before the socket exists. A program there puts every system call
 * of the node on the slow path, so the agent attaches it only while some rule names packet
 * sockets. AF_XDP sockets and (AF_INET, SOCK_PACKET) ones send frames as a packet socket
 * does: they are packet sockets here. The kill takes effect when socket() returns, so the
 * calls that would let another process use what the killed caller made (or make one no
 * socket() shows) are refused where a packet deny applies: packet_refuse_call.
 */

#define CE_AF_INET 2
#define CE_AF_INET6 10
#define CE_AF_PACKET 17
#define CE_AF_XDP 44 /* AF_XDP: frames to a device, as a packet socket sends them (CAP_NET_RAW) */
#define CE_SOCK_DGRAM 2
#define CE_SOCK_PACKET_TYPE 10 /* (AF_INET, SOCK_PACKET): the kernel makes an AF_PACKET socket of it */
#define CE_SOCK_TYPE_MASK 0xf
#define CE_IPPROTO_ICMP 1
#define CE_IPPROTO_ICMPV6 58
#define CE_IPPROTO_SCTP 132
#define CE_EPERM 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, struct ce_sock_key);
	__type(value, struct ce_rule);
} sock_rules SEC(".maps");


/* The CE_SOCK_* kind of a socket, 0 for one the connect() and sendto() judges see. */
static __always_inline __u32 sock_kind(__u32 family, __u32 type, __u32 protocol)
{
	if (family == CE_AF_PACKET || family == CE_AF_XDP ||
	    (family == CE_AF_INET && (type & CE_SOCK_TYPE_MASK) == CE_SOCK_PACKET_TYPE))
		return CE_SOCK_PACKET;
	if (family != CE_AF_INET && family != CE_AF_INET6)
		return 0;
	if (protocol == CE_IPPROTO_SCTP)
		return CE_SOCK_SCTP;
	if ((type & CE_SOCK_TYPE_MASK) == CE_SOCK_RAW_TYPE)
		return CE_SOCK_RAW;
	if ((type & CE_SOCK_TYPE_MASK) == CE_SOCK_DGRAM && (protocol == CE_IPPROTO_ICMP || protocol == CE_IPPROTO_ICMPV6))
		return CE_SOCK_ICMP;
	return 0;
}

/* The socket rule deciding a kind of socket in a container: its own entry, or every
 * container's, the better ranked. */
static __always_inline struct ce_rule *sock_rule(__u64 cgid, __u8 mon, __u32 kind)
{
	struct ce_sock_key key = {.kind = kind};
	struct ce_rule *own = NULL, *every;

	if (mon & CE_MON_OWN) {
		key.cgroup_id = cgid;
		own = bpf_map_lookup_elem(&sock_rules, &key);
	}
	key.cgroup_id = 0;
	every = bpf_map_lookup_elem(&sock_rules, &key);
	return better(own, every);
}

/* A socket made (or refused) in a monitored container, to the agent (like records grouped:
 * a loop making sockets is one record a window with its count). */
static __always_inline void sock_report(void *ctx, __u64 cgid, __u32 kind, __u32 family, __u32 type,
					__u32 protocol, struct ce_rule *rule, __u8 verdict, int refused)
{
	__u32 zero = 0;
	struct ce_proc *ev = bpf_map_lookup_elem(&proc_scratch, &zero);

	if (!ev)
		return;
	proc_common(ev, bpf_get_current_task_btf(), cgid, CE_PROC_SOCKET);
	ev->how = kind;
	ev->verdict = verdict;
	ev->slot = rule ? rule->slot : 0;
	ev->exit_code = refused ? -CE_EPERM : 0;
	ev->lifetime_ns = (__u64)family << 32 | (type & 0xffff) << 16 | (protocol & 0xffff);
	proc_send(ctx, ev, 0);
}

SEC("cgroup/sock_create")
int crossedge_sock(struct bpf_sock *sk)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);

	if (!mon)
		return 1;
	__u32 family = sk->family, type = sk->type, protocol = sk->protocol;
	__u32 kind = sock_kind(family, type, protocol);
	if (!kind || kind == CE_SOCK_PACKET)
		return 1;
	struct ce_rule *rule = sock_rule(cgid, *mon, kind);
	__u8 verdict = verdict_of(rule);
	count_slot(rule ? rule->slot : 0);
	sock_report(sk, cgid, kind, family, type, protocol, rule, verdict, verdict == CE_V_DENY);
	return verdict == CE_V_DENY ? 0 : 1;
}

/* The enforcing packet socket deny that applies to the current task's container, or NULL:
 * where one does, the calls that would make or lend a packet socket no socket() call shows
 * are refused like those under an open deny (process.bpf.h: refuse_call, crossedge_fork):
 * io_uring_setup() (IORING_OP_SOCKET), 32-bit calls, clone(CLONE_FILES) and pidfd_getfd()
 * (a sibling that shares or takes the killed maker's descriptors). `need`: the pconfig
 * flags the refusal needs (CE_PC_IO_URING for io_uring). */
static __always_inline struct ce_rule *packet_deny(__u32 need, __u64 *cgidp)
{
	__u32 zero = 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	struct ce_pconfig *cfg = bpf_map_lookup_elem(&pconfig, &zero);

	if (!mon || !cfg || (cfg->flags & need) != need || runtime_task(cfg, bpf_get_current_task_btf()))
		return NULL;
	struct ce_rule *rule = sock_rule(cgid, *mon, CE_SOCK_PACKET);
	if (verdict_of(rule) != CE_V_DENY)
		return NULL;
	*cgidp = cgid;
	return rule;
}

/* Report a call refused for a packet socket deny (the killing is the caller's). */
static __always_inline void packet_refused(void *ctx, struct ce_rule *rule, __u64 cgid, __u8 how)
{
	count_slot(rule->slot);
	refusal_report(ctx, cgid, rule->slot, how);
}

/* refuse_call's second reason: a packet socket deny (1 if the caller was killed). */
static __always_inline int packet_refuse_call(void *ctx, __u32 need, __u8 how)
{
	__u64 cgid = 0;
	struct ce_rule *rule = packet_deny(need, &cgid);

	if (!rule || bpf_send_signal(CE_SIGKILL))
		return 0;
	packet_refused(ctx, rule, cgid, how);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_socket")
int crossedge_psock(struct trace_event_raw_sys_enter *ctx)
{
	__u32 family = ctx->args[0];

	if (sock_kind(family, ctx->args[1], ctx->args[2]) != CE_SOCK_PACKET)
		return 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	if (!mon)
		return 0;
	struct ce_rule *rule = sock_rule(cgid, *mon, CE_SOCK_PACKET);
	__u8 verdict = verdict_of(rule);
	int killed = verdict == CE_V_DENY && bpf_send_signal(CE_SIGKILL) == 0;
	count_slot(rule ? rule->slot : 0);
	sock_report(ctx, cgid, CE_SOCK_PACKET, family, ctx->args[1], ctx->args[2], rule, verdict, killed);
	return 0;
}
