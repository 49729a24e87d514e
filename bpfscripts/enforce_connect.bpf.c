// SPDX-License-Identifier: GPL-2.0
/*
 * enforce_connect.bpf.c - every connect() of the containers, and every datagram they
 * address with sendto()/sendmsg(), observed and judged in the kernel.
 *
 * cgroup/connect4, connect6, sendmsg4 and sendmsg6 programs, attached by the agent to the
 * cgroups that hold containers (never the root), so they also run for containers started
 * after the attach. io_uring's connect goes through the same hook as connect(). Rules
 * apply only to cgroups listed in `monitored` (the containers in the agent's enforce
 * scope); every other cgroup below an attach point is observed, never judged.
 * For a monitored cgroup each connect() costs four LPM-trie lookups whatever the number
 * of rules: (this cgroup, this port), (this cgroup, any port), (every container, this
 * port), (every container, any port), the first two only for a cgroup with rules of its
 * own (`monitored`); the hit with the lowest rank decides.
 * A deny returns 0, so connect() fails with EPERM; an audit-mode rule lets it through.
 * Every decision is counted per rule slot (per-CPU).
 *
 * The programs are also the node's connect() observer for the cgroups they run in, which
 * costs far less than a syscall tracepoint (that puts every syscall of the machine on the
 * slow path). Every call is either sent to `events` (read by the agent with
 * `bpftool -j map event_pipe`) or counted in its flow's entry in `flows`, never neither:
 * every deny and audited would-be deny is sent (but those of a scan rule's hold, which go
 * like allowed calls: scan.bpf.h), and a flow's first allowed call in each
 * 100 ms window; the rest only add one to the flow's `folded` counter, which is never
 * reset (the agent turns its growth into events with a count). A call that can be neither
 * sent nor counted (table full and perf buffer full) is counted in `lost`.
 * IPv4-mapped IPv6 destinations are judged by the IPv4 rules, as the rule engine does;
 * 0.0.0.0 and :: (which the kernel connects to this host) as 127.0.0.1 and ::1.
 *
 * A new container is judged from its first call without waiting for the agent:
 * crossedge_mkdir (tp_btf/cgroup_mkdir) runs inside the runtime's mkdir, before any
 * process can join the new cgroup, and puts a container-shaped cgroup below an attach
 * point (or any cgroup below a monitored one) into `monitored`, so every rule that names
 * no container applies to it at once. Rules naming a container need the agent to know
 * the container's name; until it has written them, the cgroup is `pending`, and
 * crossedge_exec (tp_btf/sched_process_exec) stops (SIGSTOP) a process that execs there,
 * before the new program runs any of its own code. The agent lists the container, writes
 * its rules, clears `pending` and continues the process (SIGCONT). Nothing is held unless
 * the agent is reading `lifecycle`, and no process unless its exec record (which says it
 * is held) reached the agent: a hold nobody was told about would never end.
 *
 * The containers' processes (exec, exit, exec counts, exec rules) are watched by the
 * programs in process.bpf.h, their opens of watched paths (file rules) by those in
 * file.bpf.h, both included below. Their packets are counted by crossedge_in and
 * crossedge_out (traffic.bpf.h); the DNS answers they receive, and the rules naming
 * destinations by name (a fifth lookup, in `resolved`, per judged call), are dns.bpf.h's, and
 * so are the queries they send (remembered to match answers with) and the DNS responses
 * they would send as a trusted resolver (dropped).
 *
 * Loaded, attached and fed by monitor/kernel/enforcer.py; the struct layouts are mirrored
 * in monitor/kernel/layout.py (a test checks them against this object's BTF).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "enforce_connect.h"

char LICENSE[] SEC("license") = "GPL";

#include "shared_maps.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_key4);
	__type(value, struct ce_rule);
} rules4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_key6);
	__type(value, struct ce_rule);
} rules6 SEC(".maps");



struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_FLOWS);
	__type(key, struct ce_flow_key);
	__type(value, struct ce_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* The cgroups the programs are attached to (written by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} attach_points SEC(".maps");

/* Container cgroups made since the agent last wrote the rules: an exec there is held. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, __u8);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} lifecycle SEC(".maps");

/* A call or packet that could be neither sent nor counted. */
static __always_inline void lost_one(void)
{
	__u32 zero = 0;
	__u64 *missed = bpf_map_lookup_elem(&lost, &zero);

	if (missed)
		*missed += 1;
}

/* One more decision by a rule (slot 0: none matched). */
static __always_inline void count_slot(__u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(&counters, &slot);

	if (count)
		*count += 1;
}

#include "scan.bpf.h"
#include "limits.bpf.h"
#include "traffic.bpf.h"
#include "dns.bpf.h"
#include "xdp.bpf.h"

static __always_inline __u8 verdict_of(struct ce_rule *rule)
{
	if (rule && rule->action == CE_DENY)
		return rule->audit ? CE_V_AUDIT : CE_V_DENY;
	return CE_V_ALLOW;
}

/* scan: the container's entry (monitored containers only), which may refuse the call
 * (a scan rule's hold) or sum it (a new destination in a scan). */
static __always_inline int decide(void *ctx, struct ce_rule *rule, __u64 cgid, __u8 family,
				  const __u8 *addr, __u16 port, __u8 op, __u64 name_hash, struct ce_scan *scan, int own)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 crossed = 0;

	int held = scan && scan->blocked_ns > now; /* refused by a hold or a limit: reported by those */
	if (held) {
		rule = &scan->rule;
	} else if (scan && own && op != CE_OP_PACKET) { /* a packet is no connection */
		struct ce_rule *over = conn_limit(cgid, now);
		if (over) {
			rule = over;
			held = 1;
		}
	}
	__u32 slot = rule ? rule->slot : 0;
	__u8 verdict = verdict_of(rule);

	struct ce_flow_key fk = {};
	fk.cgroup_id = cgid;
	fk.slot = slot;
	fk.port = port;
	fk.family = family;
	fk.verdict = verdict;
	fk.op = op;
	fk.name_hash = name_hash;
	if (family == 4) /* (constant sizes: a packet's family is known only when it runs) */
		__builtin_memcpy(fk.addr, addr, 4);
	else
		__builtin_memcpy(fk.addr, addr, 16);

	/* the container's filter: a destination that never had a flow is not looked for */
	__u32 bit = scan ? seen_bit(family, addr, port) : 0;
	struct ce_flow *flow = !scan || seen(scan, bit) ? bpf_map_lookup_elem(&flows, &fk) : NULL;
	/* a call let through, or refused by a scan rule's hold, is sent once per flow per window */
	if (flow && (verdict == CE_V_ALLOW || held) && now - flow->window_ns < CE_WINDOW_NS) {
		count_slot(slot);
		__sync_fetch_and_add(&flow->folded, 1);
		return verdict == CE_V_DENY ? 0 : 1;
	}
	if (!flow && scan) {
		int step = scan_step(scan, cgid, own, now, verdict, slot, family, addr, port, &crossed);
		if (step == CE_SCAN_SUMMED) {
			count_slot(slot);
			return verdict == CE_V_DENY ? 0 : 1;
		}
		if (step == CE_SCAN_CROSSED) { /* judged by the scan rule from here on */
			rule = &scan->rule;
			slot = rule->slot;
			verdict = verdict_of(rule);
			fk.slot = slot;
			fk.verdict = verdict;
			flow = bpf_map_lookup_elem(&flows, &fk);
		}
	}
	count_slot(slot);
	int ret = verdict == CE_V_DENY ? 0 : 1;
	if (flow) {
		flow->window_ns = now;
	} else {
		struct ce_flow fresh = {.window_ns = now};
		if (scan)
			mark_seen(scan, bit); /* first: a call on another CPU that sees the flow sees the bit */
		bpf_map_update_elem(&flows, &fk, &fresh, BPF_NOEXIST); /* full table: sent, not counted */
	}

	struct ce_event ev = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	ev.ts_ns = now;
	ev.cgroup_id = cgid;
	ev.folded = flow ? flow->folded : 0;
	ev.pid = pid_tgid >> 32;
	ev.tid = (__u32)pid_tgid;
	ev.uid = (__u32)uid_gid;
	ev.gid = uid_gid >> 32;
	ev.slot = slot;
	ev.port = port;
	ev.family = family;
	ev.verdict = verdict;
	ev.op = op;
	ev.name_hash = name_hash;
	ev.scan = crossed;
	if (family == 4)
		__builtin_memcpy(ev.addr, addr, 4);
	else
		__builtin_memcpy(ev.addr, addr, 16);
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	if (rule)
		__builtin_memcpy(ev.rule_id, rule->rule_id, CE_RULE_ID_LEN);
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev)) == 0)
		return ret;

	/* The perf buffer is full: count the call with its flow instead. */
	if (!flow)
		flow = bpf_map_lookup_elem(&flows, &fk);
	if (flow)
		__sync_fetch_and_add(&flow->folded, 1);
	else
		lost_one();
	return ret;
}

/* The best-ranked address rule for a call or packet to addr:port (network byte order) by
 * cgid, from `map` with `key` (its prefix length and address set): (this cgroup | every
 * container) x (this port | any port), the first only for a cgroup with rules of its own. */
#define ADDR_RULE(map, key, cgid, own, port)                                              \
	({                                                                                 \
		struct ce_rule *best_ = NULL;                                              \
		__u64 scopes_[2] = {cgid, 0};                                              \
		__u16 ports_[2] = {port, 0};                                               \
		_Pragma("unroll") for (int s = 0; s < 2; s++)                              \
		{                                                                          \
			_Pragma("unroll") for (int p = 0; p < 2; p++)                      \
			{                                                                  \
				key.cgroup_id = scopes_[s];                                \
				key.port = ports_[p];                                      \
				if (s == 0 && !(own))                                      \
					continue; /* no rules of its own */                \
				best_ = better(best_, bpf_map_lookup_elem(&map, &key));    \
			}                                                                  \
		}                                                                          \
		best_;                                                                     \
	})

static __always_inline struct ce_rule *addr_rule4(__u64 cgid, int own, const __u8 *addr, __u16 port)
{
	struct ce_key4 key = {.prefixlen = 64 + 16 + 32};

	__builtin_memcpy(key.addr, addr, 4);
	return ADDR_RULE(rules4, key, cgid, own, port);
}

static __always_inline struct ce_rule *addr_rule6(__u64 cgid, int own, const __u8 *addr, __u16 port)
{
	struct ce_key6 key = {.prefixlen = 64 + 16 + 128};

	__builtin_memcpy(key.addr, addr, 16);
	return ADDR_RULE(rules6, key, cgid, own, port);
}

static __always_inline int judge4(struct bpf_sock_addr *ctx, __u32 ip4, __u16 port, __u8 op)
{
	__u8 addr[4];
	__u64 cgid = bpf_get_current_cgroup_id();

	if (ip4 == 0)
		ip4 = bpf_htonl(0x7f000001); /* 0.0.0.0 reaches this host: judged as 127.0.0.1 */
	__builtin_memcpy(addr, &ip4, 4);
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	if (!mon)
		return decide(ctx, NULL, cgid, 4, addr, port, op, 0, NULL, 0);
	int own = *mon & CE_MON_OWN;
	struct ce_rule *best = addr_rule4(cgid, own, addr, port);
	struct ce_rule by_name = {};
	__u64 name_hash = 0;
	struct ce_scan *scan = scan_entry(cgid);
	best = better(best, fqdn_rule(cgid, own, 4, addr, port, scan, &name_hash, &by_name));
	barrier_var(best); /* a stack or map pointer from here: no arithmetic before decide's check */
	return decide(ctx, best, cgid, 4, addr, port, op, name_hash, scan, own);
}

static __always_inline int judge6(struct bpf_sock_addr *ctx, __u8 op)
{
	__u8 addr[16];
	__u16 port = (__u16)ctx->user_port;
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff))
		return judge4(ctx, w3, port, op);
	if (w0 == 0 && w1 == 0 && w2 == 0 && w3 == 0)
		w3 = bpf_htonl(1); /* :: reaches this host: judged as ::1 */

	__u64 cgid = bpf_get_current_cgroup_id();

	__builtin_memcpy(&addr[0], &w0, 4);
	__builtin_memcpy(&addr[4], &w1, 4);
	__builtin_memcpy(&addr[8], &w2, 4);
	__builtin_memcpy(&addr[12], &w3, 4);
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	if (!mon)
		return decide(ctx, NULL, cgid, 6, addr, port, op, 0, NULL, 0);
	int own = *mon & CE_MON_OWN;
	struct ce_rule *best = addr_rule6(cgid, own, addr, port);
	struct ce_rule by_name = {};
	__u64 name_hash = 0;
	struct ce_scan *scan = scan_entry(cgid);
	best = better(best, fqdn_rule(cgid, own, 6, addr, port, scan, &name_hash, &by_name));
	barrier_var(best); /* a stack or map pointer from here: no arithmetic before decide's check */
	return decide(ctx, best, cgid, 6, addr, port, op, name_hash, scan, own);
}

/* A packet of a monitored container that no connect() or sendto() judge saw: any protocol
 * but TCP and UDP (ICMP, SCTP, a raw socket's own), and a raw socket's TCP or UDP. Judged
 * by its destination like a call (a port only where its header is read), so a deny drops it
 * (0); reported and folded per flow like calls (op CE_OP_PACKET). */
static __always_inline int judge_packet(struct __sk_buff *skb, const struct ce_pkt *p, __u64 cgid, __u8 mon)
{
	int own = mon & CE_MON_OWN;
	__u64 name_hash = 0;
	struct ce_rule by_name = {};
	struct ce_scan *scan = scan_entry(cgid);
	struct ce_rule *best = p->family == 4 ? addr_rule4(cgid, own, p->daddr, p->dport)
					      : addr_rule6(cgid, own, p->daddr, p->dport);
	best = better(best, fqdn_rule(cgid, own, p->family, p->daddr, p->dport, scan, &name_hash, &by_name));
	barrier_var(best);
	return decide(skb, best, cgid, p->family, p->daddr, p->dport, CE_OP_PACKET, name_hash, scan, own);
}

/* Whether a TCP or UDP packet comes from a raw socket (which no connect() or sendto() judge
 * sees); any other protocol is judged at egress whatever its socket. */
static __always_inline int unjudged(struct __sk_buff *skb, const struct ce_pkt *p)
{
	if (p->proto != CE_IPPROTO_TCP && p->proto != CE_IPPROTO_UDP)
		return 1;
	struct bpf_sock *sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	return sk && sk->type == CE_SOCK_RAW_TYPE;
}

SEC("cgroup/connect4")
int crossedge_c4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, ctx->user_ip4, (__u16)ctx->user_port, CE_OP_CONNECT);
}

SEC("cgroup/connect6")
int crossedge_c6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, CE_OP_CONNECT);
}

SEC("cgroup/sendmsg4")
int crossedge_s4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, ctx->user_ip4, (__u16)ctx->user_port, CE_OP_SENDMSG);
}

SEC("cgroup/sendmsg6")
int crossedge_s6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, CE_OP_SENDMSG);
}

SEC("cgroup_skb/ingress")
int crossedge_in(struct __sk_buff *skb)
{
	struct ce_pkt p = {};
	__u64 cgid = bpf_skb_cgroup_id(skb);

	if (!bpf_map_lookup_elem(&monitored, &cgid) || pkt_parse(skb, &p))
		return 1;
	account(skb, &p, cgid, 1);
	if (p.sport == bpf_htons(CE_DNS_PORT) && !p.fragment)
		dns_answer(skb, &p, cgid);
	return 1;
}

/* What egress does with a packet it lets through: its container's rate limit, and counting. */
static __always_inline int egress_rest(struct __sk_buff *skb, const struct ce_pkt *p, __u64 cgid, __u8 mon)
{
	__u64 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	int verdict = CE_SKB_PASS;
	if (mon & CE_MON_OWN) /* limits are entries of the container's own */
		verdict = egress_limit(cgid, skb->len + (segs - 1) * p->payload, segs);
	if (verdict != CE_SKB_DROP_CN)
		account(skb, p, cgid, 0); /* what left: a dropped packet is counted as held back */
	return verdict;
}

/* crossedge_pkt's slot in `packet_judge` (below). */
#define CE_PACKET_JUDGE 0

/* The packets crossedge_out does not judge itself go on to crossedge_pkt, by a tail call:
 * judging one takes a call's stack (decide's event), more than fits beside crossedge_out's
 * own. Filled at load (libbpf), kept while the map is pinned. */
int crossedge_pkt(struct __sk_buff *skb);
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32)); /* (sizes, not types: a program array takes no BTF) */
	__array(values, int(struct __sk_buff *));
} packet_judge SEC(".maps") = {
	.values = {[CE_PACKET_JUDGE] = (void *)&crossedge_pkt},
};

SEC("cgroup_skb/egress")
int crossedge_out(struct __sk_buff *skb)
{
	struct ce_pkt p = {};
	__u64 cgid = bpf_skb_cgroup_id(skb);

	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	if (!mon || pkt_parse(skb, &p))
		return 1;
	if (dns_related(&p) && !dns_sent(skb, &p, cgid))
		return 0; /* sent as a trusted resolver: forged */
	if (unjudged(skb, &p)) {
		bpf_tail_call(skb, &packet_judge, CE_PACKET_JUDGE);
		lost_one(); /* (only if the slot were empty: refused unjudged, counted) */
		return 0;
	}
	return egress_rest(skb, &p, cgid, *mon);
}

/* Not attached: crossedge_out's tail call for the packets it does not judge itself. */
SEC("cgroup_skb/egress")
int crossedge_pkt(struct __sk_buff *skb)
{
	struct ce_pkt p = {};
	__u64 cgid = bpf_skb_cgroup_id(skb);

	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);
	if (!mon || pkt_parse(skb, &p))
		return 1;
	if (!judge_packet(skb, &p, cgid, *mon))
		return 0; /* to a denied destination */
	return egress_rest(skb, &p, cgid, *mon);
}

/* -- container lifecycle ------------------------------------------------------------- */

#define CE_NAME_LEN 96
#define CE_MAX_DEPTH 16 /* ancestors looked at for an attach point */
#define CE_SIGSTOP 19
#define CE_SIGKILL 9

#include "path.bpf.h"
#include "quiet.bpf.h"
#include "process.bpf.h"
#include "file.bpf.h"
#include "sock.bpf.h"

static __always_inline int is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static __always_inline int hex64_at(const char *name, int off)
{
#pragma unroll
	for (int i = 0; i < 64; i++)
		if (!is_hex(name[off + i]))
			return 0;
	return 1;
}

static __always_inline int starts(const char *name, const char *prefix, int len)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (i >= len)
			break;
		if (name[i] != prefix[i])
			return 0;
	}
	return 1;
}

static __always_inline int scoped_id(const char *name, int len, const char *prefix, int plen)
{
	/* <prefix><64 hex>.scope (systemd driver) or, for Podman's cgroupfs form, <prefix><64 hex> */
	if (!starts(name, prefix, plen) || !hex64_at(name, plen))
		return 0;
	if (len == plen + 64)
		return 1;
	return len == plen + 70 && name[plen + 64] == '.' && name[plen + 65] == 's' && name[plen + 66] == 'c' &&
	       name[plen + 67] == 'o' && name[plen + 68] == 'p' && name[plen + 69] == 'e';
}

/* The runtimes' names for a container's cgroup, as monitor/containers.py reads them. */
static __always_inline int container_shaped(const char *name, int len)
{
	if (len == 64)
		return hex64_at(name, 0); /* cgroupfs drivers: /docker/<id>, /<ns>/<id>, pod<uid>/<id> */
	return scoped_id(name, len, "docker-", 7) || scoped_id(name, len, "libpod-", 7) ||
	       scoped_id(name, len, "crio-", 5) || scoped_id(name, len, "cri-containerd-", 15);
}

static __always_inline int below_attach_point(struct cgroup *cgrp)
{
	struct cgroup_subsys_state *css = BPF_CORE_READ(cgrp, self.parent);

	for (int i = 0; i < CE_MAX_DEPTH && css; i++) {
		__u64 id = BPF_CORE_READ(css, cgroup, kn, id);
		if (bpf_map_lookup_elem(&attach_points, &id))
			return 1;
		css = BPF_CORE_READ(css, parent);
	}
	return 0;
}

/* Cgroups made inside each container (by its outermost cgroup's id): at CE_MAX_NESTED the
 * next one's maker is killed, so that no container can fill `monitored` and leave the
 * containers made after it unjudged. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, __u32);
} nested SEC(".maps");

/* The container a cgroup is inside: its outermost monitored ancestor (0: none, it is the
 * container or outside one). */
static __always_inline __u64 holder_of(struct cgroup *cgrp)
{
	struct cgroup_subsys_state *css = BPF_CORE_READ(cgrp, self.parent);
	__u64 top = 0;

	for (int i = 0; i < CE_MAX_DEPTH && css; i++) {
		__u64 id = BPF_CORE_READ(css, cgroup, kn, id);
		if (!bpf_map_lookup_elem(&monitored, &id))
			break;
		top = id;
		css = BPF_CORE_READ(css, parent);
	}
	return top;
}

/* Kill a process (the current one, or `task`) for a cgroup inside its container past the
 * bound, and report it (a refused call, CE_HOW_CGROUPS). */
static __always_inline void cgroup_refused(void *ctx, struct task_struct *task)
{
	if (task && bpf_send_signal_task)
		bpf_send_signal_task(task, CE_SIGKILL, PIDTYPE_TGID, 0);
	else
		bpf_send_signal(CE_SIGKILL);
	refusal_report(ctx, bpf_get_current_cgroup_id(), 0, CE_HOW_CGROUPS);
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(crossedge_mkdir, struct cgroup *cgrp, const char *path)
{
	char name[CE_NAME_LEN] = {};
	__u8 one = 1, mon = CE_MON; /* no rules of its own: the agent has not listed it yet */

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0; /* a cgroup v1 hierarchy (hybrid hosts): ids there are another namespace */
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u64 parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	if (!bpf_map_lookup_elem(&monitored, &parent)) {
		int len = bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(cgrp, kn, name)) - 1;
		if (len <= 0 || !container_shaped(name, len) || !below_attach_point(cgrp))
			return 0;
	} else { /* a cgroup inside a container: counted against it */
		__u64 top = holder_of(cgrp);
		__u32 first = 1, *made = bpf_map_lookup_elem(&nested, &top);
		if (made && *made >= CE_MAX_NESTED) {
			cgroup_refused(ctx, NULL); /* (the cgroup stays, unjudged: a process moved in is killed) */
			return 0;
		}
		if (made)
			__sync_fetch_and_add(made, 1);
		else if (bpf_map_update_elem(&nested, &top, &first, BPF_NOEXIST) && (made = bpf_map_lookup_elem(&nested, &top)))
			__sync_fetch_and_add(made, 1);
	}
	/* A container, or a cgroup inside one: every rule naming no container applies now. */
	bpf_map_update_elem(&monitored, &id, &mon, BPF_ANY);
	bpf_map_update_elem(&pending, &id, &one, BPF_ANY);
	struct ce_lifecycle ev = {.ts_ns = bpf_ktime_get_ns(), .cgroup_id = id, .parent_id = parent, .type = CE_LC_NEW};
	if (bpf_perf_event_output(ctx, &lifecycle, BPF_F_CURRENT_CPU, &ev, sizeof(ev)) != 0)
		bpf_map_delete_elem(&pending, &id); /* no agent reading: nobody would release a hold */
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(crossedge_rmdir, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	if (!bpf_map_lookup_elem(&monitored, &id))
		return 0;
	__u64 top = holder_of(cgrp);
	if (!top) { /* the container itself */
		bpf_map_delete_elem(&nested, &id);
		return 0;
	}
	__u32 *made = bpf_map_lookup_elem(&nested, &top);
	if (made && *made > 0)
		__sync_fetch_and_add(made, (__u32)-1); /* (clang 14 has no BPF atomic sub) */
	return 0;
}

/* A process moved into a cgroup inside a container that is not judged (made past the bound,
 * or when `monitored` was full): killed, so no cgroup inside a container runs unjudged. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(crossedge_attach, struct cgroup *dst, const char *path, struct task_struct *task, bool threadgroup)
{
	if (BPF_CORE_READ(dst, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(dst, kn, id);
	__u64 parent = BPF_CORE_READ(dst, self.parent, cgroup, kn, id);
	if (bpf_map_lookup_elem(&monitored, &id) || !bpf_map_lookup_elem(&monitored, &parent))
		return 0;
	cgroup_refused(ctx, task);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(crossedge_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u8 *mon = bpf_map_lookup_elem(&monitored, &cgid);

	if (mon)
		proc_exec(ctx, task, bprm, cgid, *mon);
	return 0;
}
