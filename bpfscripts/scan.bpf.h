/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scan.bpf.h - scans summed in the kernel, and scan rules judged there.
 *
 * A container's calls to destinations it has no flow for ("new destinations": a miss in
 * `flows`) are counted per one-second window in its `scans` entry. A scan makes every call
 * a new flow and an event: the agent, uplink and database would carry one row per call,
 * and the flow table would fill. So from `summarise` new destinations in a window, and for
 * as long as each following window reaches it, a new destination's call is only added to
 * the entry's cumulative counts (calls, refused calls, port range, first destination): the
 * agent turns their growth into a summary row per container every few seconds. Every call is
 * still judged and counted per rule; nothing is lost from the accounting.
 *
 * Scan rules (`limit: {new_destinations: N}`) are up to CE_SCAN_RULES thresholds per scope:
 * every container's in `scan_every`, a container's own (with every container's) in
 * `scan_limits`. The call that reaches a threshold is judged by the rule and sent with the
 * count (ce_event.scan): the agent raises one scan violation for it, not one per call,
 * and not again while the scan goes on. A deny rule also refuses every call of the container
 * for the rule's hold (an audit-mode one reports them), from that call on, in the kernel.
 *
 * The entry also carries what the other programs need to know of a container at every call
 * cheaply: whether it is scanning (traffic.bpf.h) and whether a DNS answer reached it
 * (`named`, dns.bpf.h); and a filter of the destinations that ever had a flow (`seen`, a
 * bit per hash of address and port, set before the flow is made and never cleared). A
 * destination whose bit is clear has no flow, so its call is new without looking in
 * `flows` (a random bucket of a large table: a cache miss a call, most of what a scan's call
 * cost connect4 in lookups); a set bit, or a bit another destination set, only costs that
 * lookup. Flows the agent prunes leave their bits: the filter errs towards looking.
 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_SCANS);
	__type(key, __u64);
	__type(value, struct ce_scan);
} scans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, struct ce_scan_limits);
} scan_limits SEC(".maps");

/* Every container's summing threshold and scan rules ([0]; a threshold of 0: the agent has
 * not written it yet, nothing is summed). An array: the lookup each new destination makes
 * of a container without rules of its own is inlined, not hashed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_scan_limits);
} scan_every SEC(".maps");

#define CE_SCAN_SENT 0 /* a call like any other: a flow and an event */
#define CE_SCAN_SUMMED 1 /* summed into the container's entry */
#define CE_SCAN_CROSSED 2 /* it reached a scan rule's threshold: judged by that rule, sent */

/* A new entry's contents (all zero): too large for the BPF stack. Never written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_scan);
} scan_empty SEC(".maps");

/* The container's entry, made at its first call. */
static __always_inline struct ce_scan *scan_entry(__u64 cgid)
{
	struct ce_scan *s = bpf_map_lookup_elem(&scans, &cgid);
	__u32 zero = 0;

	if (s)
		return s;
	struct ce_scan *empty = bpf_map_lookup_elem(&scan_empty, &zero);
	if (!empty)
		return NULL;
	bpf_map_update_elem(&scans, &cgid, empty, BPF_NOEXIST);
	return bpf_map_lookup_elem(&scans, &cgid);
}

/* The destination's bit in its container's `seen` filter. */
static __always_inline __u32 seen_bit(__u8 family, const __u8 *addr, __u16 port)
{
	__u32 w0, h = (__u32)port * 0x9E3779B1u;

	__builtin_memcpy(&w0, addr, 4);
	h ^= w0 * 0x85EBCA77u;
	if (family == 6) {
		__u32 w1, w2, w3;
		__builtin_memcpy(&w1, addr + 4, 4);
		__builtin_memcpy(&w2, addr + 8, 4);
		__builtin_memcpy(&w3, addr + 12, 4);
		h ^= (w1 * 0xC2B2AE3Du) ^ (w2 * 0x27D4EB2Fu) ^ (w3 * 0x165667B1u);
	}
	h ^= h >> 15;
	h *= 0x2C1B3C6Du;
	h ^= h >> 12;
	return h & (CE_SEEN_BITS - 1);
}

static __always_inline int seen(const struct ce_scan *s, __u32 bit)
{
	return (s->seen[(bit >> 6) & (CE_SEEN_BITS / 64 - 1)] >> (bit & 63)) & 1;
}

static __always_inline void mark_seen(struct ce_scan *s, __u32 bit)
{
	__sync_fetch_and_or(&s->seen[(bit >> 6) & (CE_SEEN_BITS / 64 - 1)], 1ULL << (bit & 63));
}

/* A call to a new destination: counted in the window, and summed, or judged by a scan rule
 * whose threshold it reaches (*crossed: the count). */
static __always_inline int scan_step(struct ce_scan *s, __u64 cgid, int own, __u64 now, __u8 verdict,
				     __u32 slot, __u8 family, const __u8 *addr, __u16 port, __u32 *crossed)
{
	struct ce_scan_limits *lim = own ? bpf_map_lookup_elem(&scan_limits, &cgid) : NULL;
	__u32 zero = 0;

	if (!lim)
		lim = bpf_map_lookup_elem(&scan_every, &zero);
	if (!lim || !lim->summarise)
		return CE_SCAN_SENT;
	__u64 age = now - s->window_ns;
	if (age >= CE_SCAN_WINDOW_NS) { /* a new window (two CPUs may both start it: counts are approximate) */
		int last = age < 2 * CE_SCAN_WINDOW_NS; /* the window just over was the one before this */
		s->scanning = last && s->fresh >= lim->summarise;
		s->over_before = last ? s->over : 0;
		s->over = 0;
		s->fresh = 0;
		s->window_ns = now;
	}
	__u32 fresh = s->fresh + 1; /* two CPUs may count one: a threshold is reached a call late */
	s->fresh = fresh;
	__u32 count = lim->count;
#pragma unroll
	for (int i = 0; i < CE_SCAN_RULES; i++) {
		struct ce_scan_rule *r = &lim->rules[i];
		__u8 bit = 1 << i;
		if (i >= count || fresh < r->threshold || (s->over & bit))
			continue;
		s->over |= bit;
		int deny = r->action == CE_DENY;
		if ((s->over_before & bit) && !(deny && s->blocked_ns <= now))
			continue; /* the same scan, still over it (a deny's hold ran out: it is renewed) */
		s->rule.rank = 0;
		s->rule.slot = r->slot;
		s->rule.action = r->action;
		s->rule.audit = r->audit;
		__builtin_memcpy(s->rule.rule_id, r->rule_id, CE_RULE_ID_LEN);
		if (deny)
			s->blocked_ns = now + r->hold_ns;
		*crossed = fresh;
	}
	if (*crossed)
		return CE_SCAN_CROSSED;
	__u16 p = bpf_ntohs(port);
	if (!s->scanning) {
		if (fresh <= lim->summarise && s->blocked_ns <= now)
			return CE_SCAN_SENT; /* (a held container's calls are summed whatever their number) */
		s->scanning = 1; /* a scan begins: what it reached so far went out as flows */
		s->port_lo = p;
		s->port_hi = p;
		s->family = family;
		__builtin_memset(s->addr, 0, 16);
		if (family == 4)
			__builtin_memcpy(s->addr, addr, 4);
		else
			__builtin_memcpy(s->addr, addr, 16);
		__u64 uid_gid = bpf_get_current_uid_gid();
		s->pid = bpf_get_current_pid_tgid() >> 32;
		s->uid = (__u32)uid_gid;
		s->gid = uid_gid >> 32;
		bpf_get_current_comm(s->comm, sizeof(s->comm));
	}
	if (p < s->port_lo)
		s->port_lo = p;
	if (p > s->port_hi)
		s->port_hi = p;
	if (verdict == CE_V_DENY) {
		s->deny_slot = slot;
		__sync_fetch_and_add(&s->denied, 1);
	}
	__sync_fetch_and_add(&s->calls, 1); /* last: a reader that sees the call sees its kind */
	return CE_SCAN_SUMMED;
}
