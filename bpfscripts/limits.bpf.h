/* SPDX-License-Identifier: GPL-2.0 */
/*
 * limits.bpf.h - how fast a container may send, and connect.
 *
 * Limit rules (`limit: {egress_bytes_per_s: N}` or `{connections_per_s: N}`) become one
 * `limits` entry per container they apply to (the agent expands rules for every
 * container). Each limit is a virtual queue, as in the kernel's samples/bpf/hbm: the time
 * at which what was let through would have left at the rate. crossedge_out passes a packet
 * while the queue is within the burst (marking congestion from half of it, so TCP backs off
 * before anything is dropped: return 3) and drops it beyond (return 2: dropped, congestion
 * noted, so TCP does not wait for a timeout). The connect programs refuse a call beyond the
 * connection rate's burst (EPERM), judged by the limit rule. What each limit held back is
 * counted in the entry; the agent reports it (one violation a minute at most while it bites).
 * An audit-mode rule counts without holding anything back.
 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, struct ce_limit);
} limits SEC(".maps");

#define CE_SKB_PASS 1
#define CE_SKB_DROP_CN 2 /* dropped, and the sender told of congestion */
#define CE_SKB_PASS_CN 3 /* passed, the sender told of congestion */

/* A call over its container's connection rate: the rule that refuses it, or NULL. */
static __always_inline struct ce_rule *conn_limit(__u64 cgid, __u64 now)
{
	struct ce_limit *lim = bpf_map_lookup_elem(&limits, &cgid);

	if (!lim || !lim->conn_rate)
		return NULL;
	__u64 vq = lim->conn_vq_ns;
	if (vq < now)
		vq = now;
	if (vq - now > lim->conn_burst_ns) {
		__sync_fetch_and_add(&lim->refused, 1);
		return &lim->conn_rule;
	}
	lim->conn_vq_ns = vq + 1000000000ULL / lim->conn_rate; /* two CPUs may both add: approximate */
	return NULL;
}

/* An outgoing packet of `bytes` on the wire (segs segments): pass, mark or drop. */
static __always_inline int egress_limit(__u64 cgid, __u64 bytes, __u64 segs)
{
	struct ce_limit *lim = bpf_map_lookup_elem(&limits, &cgid);

	if (!lim || !lim->egress_rate)
		return CE_SKB_PASS;
	__u64 now = bpf_ktime_get_ns();
	__u64 vq = lim->egress_vq_ns;
	if (vq < now)
		vq = now;
	__u64 ahead = vq - now;
	if (ahead > lim->egress_burst_ns) {
		__sync_fetch_and_add(&lim->held_bytes, bytes);
		__sync_fetch_and_add(&lim->held_packets, segs);
		count_slot(lim->egress_slot);
		return lim->egress_audit ? CE_SKB_PASS : CE_SKB_DROP_CN;
	}
	lim->egress_vq_ns = vq + bytes * 1000000000ULL / lim->egress_rate;
	if (ahead > lim->egress_burst_ns / 2 && !lim->egress_audit)
		return CE_SKB_PASS_CN;
	return CE_SKB_PASS;
}
