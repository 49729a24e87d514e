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

static __always_inline int block_verdict(struct ce_block *b)
{
	if (!b || (b->expires_ns && b->expires_ns <= bpf_ktime_get_ns()))
		return XDP_PASS;
	__u32 slot = b->slot;
	__u64 *count = bpf_map_lookup_elem(&counters, &slot);
	if (count)
		*count += 1;
	return b->action == CE_DENY && !b->audit ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int crossedge_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(CE_ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		struct ce_src_key4 key = {.prefixlen = 32};
		__builtin_memcpy(key.addr, &ip->saddr, 4);
		return block_verdict(bpf_map_lookup_elem(&block4, &key));
	}
	if (eth->h_proto == bpf_htons(CE_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		struct ce_src_key6 key = {.prefixlen = 128};
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		return block_verdict(bpf_map_lookup_elem(&block6, &key));
	}
	return XDP_PASS;
}
