/* SPDX-License-Identifier: GPL-2.0 */
/*
 * traffic.bpf.h - every packet a monitored container's sockets send or receive, counted
 * per container and flow, and the packet programs themselves.
 *
 * crossedge_in (cgroup_skb/ingress) and crossedge_out (cgroup_skb/egress), attached with the
 * connect programs, pass every packet. For a monitored cgroup each packet adds its bytes
 * (as on the wire: a GSO packet's headers once per segment), its payload (above TCP/UDP)
 * and its segments to the flow's entry
 * (container cgroup, family, protocol, local port, remote address and port) in one of two
 * per-CPU tables: `traffic_epoch` says which. The agent flips the epoch, waits for the programs
 * still counting in the old table (they run for microseconds), then reads the old table
 * whole and empties it: each reading is exactly what was counted since the last one, and
 * nothing is counted twice or dropped. A full table counts a new flow in its container's
 * "other" entry (protocol 0), and so does a container that is scanning (scan.bpf.h: each
 * call a new flow; its SYNs, SYN-ACKs and RSTs are not even looked for); only when even
 * that finds no room are the bytes counted in `traffic_lost`. crossedge_in also reads DNS
 * answers (dns.bpf.h); both programs are in enforce_connect.bpf.c.
 */

#define CE_ETH_P_IP 0x0800
#define CE_ETH_P_IPV6 0x86DD
#define CE_IPPROTO_TCP 6
#define CE_IPPROTO_UDP 17
#define CE_IPPROTO_FRAGMENT 44 /* an IPv6 fragment header (no ports follow it in view) */
#define CE_MAX_L4 60 /* the furthest a TCP/UDP header starts (an IPv4 header with every option) */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, CE_MAX_TRAFFIC);
	__type(key, struct ce_traffic_key);
	__type(value, struct ce_traffic);
} traffic0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, CE_MAX_TRAFFIC);
	__type(key, struct ce_traffic_key);
	__type(value, struct ce_traffic);
} traffic1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} traffic_epoch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} traffic_lost SEC(".maps");

/* What the programs read of a packet. */
struct ce_pkt {
	__u32 l4; /* offset of the TCP/UDP header */
	__u32 payload; /* offset of what is above it */
	__u16 sport, dport; /* network byte order; 0 without ports */
	__u8 family;
	__u8 proto;
	__u8 fragment; /* 1: an IPv4 fragment after the first (no ports) */
	__u8 handshake; /* 1: a TCP SYN, SYN-ACK or RST (a connection begins, or is refused) */
	__u32 seq; /* TCP: the segment's sequence number (host byte order) */
	__u8 saddr[16];
	__u8 daddr[16];
};

/* len bytes at off into `to`: read in place when the packet's linear part holds them (nearly
 * always: a helper call less per header), else copied by the helper. */
static __always_inline int pkt_read(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

	if (off <= CE_MAX_L4 && data + off + len <= end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline int pkt_parse(struct __sk_buff *skb, struct ce_pkt *p)
{
	if (skb->protocol == bpf_htons(CE_ETH_P_IP)) {
		struct iphdr ip;
		if (pkt_read(skb, 0, &ip, sizeof(ip)))
			return -1;
		p->family = 4;
		p->proto = ip.protocol;
		p->l4 = ip.ihl * 4;
		p->fragment = (ip.frag_off & bpf_htons(0x1fff)) != 0;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(CE_ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (pkt_read(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		p->family = 6;
		p->proto = ip6.nexthdr;
		p->l4 = sizeof(ip6);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	} else {
		return -1;
	}
	p->payload = p->l4;
	if (p->fragment)
		return 0;
	if (p->proto == CE_IPPROTO_UDP) {
		struct udphdr uh;
		if (pkt_read(skb, p->l4, &uh, sizeof(uh)) == 0) {
			p->sport = uh.source;
			p->dport = uh.dest;
			p->payload = p->l4 + sizeof(uh);
		}
	} else if (p->proto == CE_IPPROTO_TCP) {
		struct tcphdr th;
		if (pkt_read(skb, p->l4, &th, sizeof(th)) == 0) {
			p->sport = th.source;
			p->dport = th.dest;
			p->payload = p->l4 + th.doff * 4;
			p->handshake = th.syn || th.rst;
			p->seq = bpf_ntohl(th.seq);
		}
	}
	return 0;
}

static __always_inline void count_in(void *table, struct ce_traffic_key *key, __u64 bytes, __u64 payload,
				     __u64 segs, int in, int handshake)
{
	struct ce_traffic *v = NULL;
	struct ce_scan *scan = NULL;

	/* A scanning container's handshakes are its scan's (a flow of its own, begun before the
	 * scan, may see one more: its RST is then counted as other traffic): not looked for in
	 * the table, a random bucket of it, a cache miss a packet. */
	if (handshake)
		scan = bpf_map_lookup_elem(&scans, &key->cgroup_id);
	if (!scan || !scan->scanning)
		v = bpf_map_lookup_elem(table, key);
	if (!v) {
		struct ce_traffic fresh = {};
		if (!handshake)
			scan = bpf_map_lookup_elem(&scans, &key->cgroup_id);
		/* a scanning container's new flows go to its other entry at once: no table fills */
		if ((scan && scan->scanning) ||
		    (bpf_map_update_elem(table, key, &fresh, BPF_NOEXIST) && bpf_map_lookup_elem(table, key) == NULL)) {
			/* the table is full: the container's other traffic */
			__builtin_memset(key->remote, 0, sizeof(key->remote));
			key->proto = CE_PROTO_OTHER;
			key->local_port = key->remote_port = 0;
			v = bpf_map_lookup_elem(table, key); /* there from the scan's first packet on */
			if (!v)
				bpf_map_update_elem(table, key, &fresh, BPF_NOEXIST);
		}
		if (!v)
			v = bpf_map_lookup_elem(table, key);
	}
	if (!v) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&traffic_lost, &zero);
		if (lost)
			*lost += bytes;
		return;
	}
	if (in) {
		__sync_fetch_and_add(&v->bytes_in, bytes);
		__sync_fetch_and_add(&v->payload_in, payload);
		__sync_fetch_and_add(&v->packets_in, segs);
	} else {
		__sync_fetch_and_add(&v->bytes_out, bytes);
		__sync_fetch_and_add(&v->payload_out, payload);
		__sync_fetch_and_add(&v->packets_out, segs);
	}
}

static __always_inline void account(struct __sk_buff *skb, const struct ce_pkt *p, __u64 cgid, int in)
{
	struct ce_traffic_key key = {.cgroup_id = cgid, .family = p->family, .proto = p->proto};
	__u32 zero = 0;

	key.local_port = bpf_ntohs(in ? p->dport : p->sport);
	key.remote_port = bpf_ntohs(in ? p->sport : p->dport);
	if (in)
		__builtin_memcpy(key.remote, p->saddr, 16);
	else
		__builtin_memcpy(key.remote, p->daddr, 16);
	__u64 payload = skb->len > p->payload ? skb->len - p->payload : 0;
	__u64 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	/* a GSO packet leaves as segs packets, each with the headers */
	__u64 bytes = skb->len + (segs - 1) * p->payload;
	__u32 *epoch = bpf_map_lookup_elem(&traffic_epoch, &zero);
	if (epoch && *epoch)
		count_in(&traffic1, &key, bytes, payload, segs, in, p->handshake);
	else
		count_in(&traffic0, &key, bytes, payload, segs, in, p->handshake);
}
