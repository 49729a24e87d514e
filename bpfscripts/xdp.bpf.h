/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdp.bpf.h - the node's ingress blocklist: packets from a blocked source network dropped
 * before the stack sees them.
 *
 * crossedge_xdp runs at XDP on the interfaces a node chooses (native where the driver has
 * it, generic otherwise: the agent probes and says which). Rules naming `source_ip` become
 * entries of two LPM tries (the agent flattens them by rank); a hit whose rule denies, and
 * has not expired, drops the packet and counts it in the rule's slot (`counters`, shared
 * with the connect programs); an audit-mode deny or an alert rule counts and passes.
 * Map writes change the list live; an entry past its expiry is passed over by the program
 * itself, so a block ends on time whether or not an agent runs.
 *
 * SYN floods: with flood rules (`limit: {syn_per_source: N}`) in `flood_limits`, each
 * source's TCP SYNs are counted per second (`syn_rates`, least recently seen sources go
 * first). The SYN that reaches a rule's threshold is reported on `events` (CE_OP_FLOOD: one
 * report per flood, not again while it goes on) and, for a deny, puts the source in
 * `flooders` for the rule's hold: dropped from that SYN on, by the program itself, with no
 * agent involved. Without flood rules nothing of this runs.
 */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_src_key4);
	__type(value, struct ce_block);
} block4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_src_key6);
	__type(value, struct ce_block);
} block6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_scan_limits);
} flood_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CE_MAX_SOURCES);
	__type(key, struct ce_src);
	__type(value, struct ce_syn_rate);
} syn_rates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CE_MAX_SOURCES);
	__type(key, struct ce_src);
	__type(value, struct ce_flooder);
} flooders SEC(".maps");

/* Until when some source may be held (CLOCK_MONOTONIC): past it, no packet looks in `flooders`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flood_held SEC(".maps");

/* A SYN from src: counted, and judged by the flood rules whose threshold it reaches. */
static __always_inline void syn_seen(struct xdp_md *ctx, struct ce_scan_limits *lim, struct ce_src *src,
				     __u16 dport, __u64 now)
{
	struct ce_syn_rate *r = bpf_map_lookup_elem(&syn_rates, src);

	if (!r) {
		struct ce_syn_rate fresh = {.window_ns = now};
		bpf_map_update_elem(&syn_rates, src, &fresh, BPF_NOEXIST);
		r = bpf_map_lookup_elem(&syn_rates, src);
		if (!r)
			return;
	}
	__u64 age = now - r->window_ns;
	if (age >= CE_SCAN_WINDOW_NS) {
		r->over_before = age < 2 * CE_SCAN_WINDOW_NS ? r->over : 0;
		r->over = 0;
		r->syns = 0;
		r->window_ns = now;
	}
	__u32 syns = r->syns + 1; /* two CPUs may count one: a threshold is reached a SYN late */
	r->syns = syns;
	__u32 count = lim->count;
#pragma unroll
	for (int i = 0; i < CE_SCAN_RULES; i++) {
		struct ce_scan_rule *rule = &lim->rules[i];
		__u8 bit = 1 << i;
		if (i >= count || syns < rule->threshold || (r->over & bit))
			continue;
		r->over |= bit;
		int deny = rule->action == CE_DENY;
		struct ce_flooder *held = bpf_map_lookup_elem(&flooders, src);
		if ((r->over_before & bit) && !(deny && (!held || held->expires_ns <= now)))
			continue; /* the same flood, still over it (a deny's hold ran out: it is renewed) */
		if (deny) {
			struct ce_flooder f = {.expires_ns = now + rule->hold_ns, .slot = rule->slot, .audit = rule->audit};
			bpf_map_update_elem(&flooders, src, &f, BPF_ANY);
			__u32 zero = 0;
			__u64 *held_until = bpf_map_lookup_elem(&flood_held, &zero);
			if (held_until && *held_until < f.expires_ns)
				*held_until = f.expires_ns; /* racy, and only ever later: at worst a lookup too many */
		}
		struct ce_event ev = {};
		ev.ts_ns = now;
		ev.slot = rule->slot;
		ev.port = dport;
		ev.family = src->family;
		ev.verdict = deny ? (rule->audit ? CE_V_AUDIT : CE_V_DENY) : CE_V_ALLOW;
		ev.op = CE_OP_FLOOD;
		ev.scan = syns;
		__builtin_memcpy(ev.addr, src->addr, 16);
		__builtin_memcpy(ev.rule_id, rule->rule_id, CE_RULE_ID_LEN);
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
		if (!deny) /* a deny counts the packets it holds (flood_verdict) */
			count_slot(rule->slot);
	}
}

/* The source's flood hold, if any: XDP_DROP, or XDP_PASS (counted when audited). */
static __always_inline int flood_verdict(struct ce_src *src, __u64 now)
{
	struct ce_flooder *f = bpf_map_lookup_elem(&flooders, src);

	if (!f || f->expires_ns <= now)
		return -1;
	count_slot(f->slot);
	return f->audit ? -1 : XDP_DROP;
}

static __always_inline int block_verdict(struct ce_block *b)
{
	if (!b || (b->expires_ns && b->expires_ns <= bpf_ktime_get_ns()))
		return XDP_PASS;
	count_slot(b->slot);
	return b->action == CE_DENY && !b->audit ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int crossedge_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ce_src src = {};
	struct tcphdr *tcp = NULL;
	int verdict;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(CE_ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		struct ce_src_key4 key = {.prefixlen = 32};
		__builtin_memcpy(key.addr, &ip->saddr, 4);
		verdict = block_verdict(bpf_map_lookup_elem(&block4, &key));
		if (verdict == XDP_DROP)
			return verdict;
		src.family = 4;
		__builtin_memcpy(src.addr, &ip->saddr, 4);
		if (ip->protocol == CE_IPPROTO_TCP && ip->ihl == 5 && !(ip->frag_off & bpf_htons(0x1fff)))
			tcp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(CE_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		struct ce_src_key6 key = {.prefixlen = 128};
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		verdict = block_verdict(bpf_map_lookup_elem(&block6, &key));
		if (verdict == XDP_DROP)
			return verdict;
		src.family = 6;
		__builtin_memcpy(src.addr, &ip6->saddr, 16);
		if (ip6->nexthdr == CE_IPPROTO_TCP)
			tcp = (void *)(ip6 + 1);
	} else {
		return XDP_PASS;
	}
	__u32 zero = 0;
	struct ce_scan_limits *lim = bpf_map_lookup_elem(&flood_limits, &zero);
	if (!lim || !lim->count)
		return XDP_PASS;
	__u64 now = bpf_ktime_get_ns();
	__u64 *held_until = bpf_map_lookup_elem(&flood_held, &zero);
	if (held_until && *held_until > now && flood_verdict(&src, now) == XDP_DROP)
		return XDP_DROP;
	if (tcp && (void *)(tcp + 1) <= end && tcp->syn && !tcp->ack) {
		syn_seen(ctx, lim, &src, tcp->dest, now);
		if (flood_verdict(&src, now) == XDP_DROP)
			return XDP_DROP; /* this SYN reached a deny rule's threshold */
	}
	return XDP_PASS;
}
