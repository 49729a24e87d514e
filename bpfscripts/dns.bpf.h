/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dns.bpf.h - the DNS answers monitored containers receive, and the name rules.
 *
 * crossedge_in (traffic.bpf.h) hands dns_answer() every packet from port 53 that a
 * monitored container's sockets receive. A UDP datagram or TCP segment that holds a DNS
 * response is read (up to
 * CE_DNS_LEN bytes) and parsed here: its question's name is hashed at every label
 * (ce_name_hash, enforce_connect.h), the most specific name pattern that has rules
 * (`fqdn_rules`: the name itself, else the longest "*.suffix") is chosen, and every A and
 * AAAA record of the answer section is written to `resolved` as (cgroup, address) ->
 * (expiry from its TTL, name, pattern) before the packet reaches the socket. So the
 * connect() that follows an answer is judged by the name's rules without waiting for
 * the agent; the agent gets the answer's header and question on the `dns` perf array
 * (for the names it shows) and reads `dns_stats` (answers, records it could not be sent, malformed).
 *
 * Owners of answer records are not compared with the question: an answer's addresses
 * (after any CNAME chain) are the question's, as a resolver returns them.
 *
 * Only an answer to a query is learned. crossedge_out hands dns_sent() every packet a
 * monitored container sends to or from port 53: a query to a resolver the node trusts
 * (`dns_resolvers`, written by the agent) is remembered with its socket (`dns_asked`,
 * socket storage: no table the containers share, freed with the socket) by id, resolver
 * and question; an answer is learned only if it reaches that socket from that resolver
 * with that id and question, which then is forgotten (one answer per query). Any other
 * answer (a forged one, one from a resolver the node does not trust, one a neighbour sent
 * at any port) teaches nothing and is sent to the agent flagged, which raises a violation.
 * A container cannot answer for a trusted resolver either: a DNS response a monitored
 * container sends from a trusted resolver's address (a socket bound there in its own
 * network namespace, a raw socket) is dropped before it leaves, and reported.
 */

#define CE_DNS_MASK (CE_DNS_LEN - 1)
#define CE_DNS_WORDS (CE_DNS_LEN / 64)
#define CE_FNV_OFFSET 0xcbf29ce484222325ULL
#define CE_FNV_PRIME 0x100000001b3ULL
#define CE_DNS_HEADER 12
#define CE_DNS_MAX_NAME 255
#define CE_DNS_MAX_LABELS 128
#define CE_DNS_MAX_STEPS 512 /* answer walk: a step reads an owner label or a record's fixed part */
#define CE_DNS_PORT 53
#define CE_DNS_STAT_ANSWERS 0 /* responses parsed */
#define CE_DNS_STAT_LOST 1 /* ... that could not be sent to the agent (its buffer was full) */
#define CE_DNS_STAT_BAD 2 /* packets from port 53 that were no parseable response */
#define CE_DNS_STAT_UNMATCHED 3 /* answers that matched no query of the socket: learned from nothing */
#define CE_DNS_STAT_FORGED 4 /* responses a container sent as a trusted resolver: dropped */
#define CE_DNS_STAT_QUERIES 5 /* queries to trusted resolvers remembered */
#define CE_DNS_STATS 6
#define CE_DNS_ANSWERS 0 /* dns_scratch: the entry crossedge_in's answers use */
#define CE_DNS_SENT 1 /* ... crossedge_out's (egress may be interrupted by ingress on its CPU) */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_fqdn_key);
	__type(value, struct ce_fqdn_rules);
} fqdn_rules SEC(".maps");

/* Every container's rules for addresses it never resolved (`dest_fqdn: none`; count 0: none),
 * looked at by each call of a container without such rules of its own: an array, so that
 * lookup is inlined, not hashed (the same list as fqdn_rules would hold at (0, none)). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_fqdn_rules);
} fqdn_unnamed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CE_MAX_RESOLVED);
	__type(key, struct ce_addr_key);
	__type(value, struct ce_resolved);
} resolved SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} dns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 256);
	__type(key, struct ce_resolver_key);
	__type(value, __u8);
} dns_resolvers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ce_dns_asked);
} dns_asked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CE_DNS_STATS);
	__type(key, __u32);
	__type(value, __u64);
} dns_stats SEC(".maps");

/* State shared by the bpf_loop callbacks, kept in the per-CPU scratch: on the stack its
 * exact values would make the verifier walk every iteration of every loop. */
struct dns_walk {
	__u64 cgid;
	__u64 hash;
	__u64 now;
	__u32 off;
	__u32 end; /* bytes of msg read */
	__u32 qend; /* offset of the question name's root label (0 until found) */
	__u32 left; /* answer records still to read */
	__u8 owner; /* 1: reading a record's owner name, 0: its fixed part */
	__u8 bad;
	__u8 written;
	__u8 found_cg;
	__u8 found_all;
	__u8 query; /* 1: hashing a query's name (no rules looked up) */
	__u8 pad[2];
	struct ce_fqdn_key best_cg; /* most specific pattern with rules for this cgroup */
	struct ce_fqdn_key best_all; /* ... for every container */
	struct ce_fqdn_key pattern; /* the one chosen */
};

struct dns_scratch {
	struct ce_dns rec;
	__u64 starts[CE_DNS_WORDS]; /* bit per offset of msg: a label of the question starts there */
	struct dns_walk w;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* CE_DNS_ANSWERS, CE_DNS_SENT */
	__type(key, __u32);
	__type(value, struct dns_scratch);
} dns_scratch SEC(".maps");


static __always_inline void dns_stat(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&dns_stats, &which);
	if (n)
		*n += 1;
}

/* which: CE_DNS_ANSWERS or CE_DNS_SENT (the bpf_loop callbacks get it as their ctx). */
static __always_inline struct dns_scratch *scratch(const void *which)
{
	return bpf_map_lookup_elem(&dns_scratch, which);
}

static __always_inline __u8 msg_at(struct dns_scratch *s, __u32 off)
{
	barrier_var(off); /* so the compiler keeps the mask the verifier needs */
	return s->rec.msg[off & CE_DNS_MASK];
}

/* The bitmap word that holds off's label-start bit. */
static __always_inline __u64 *start_word(struct dns_scratch *s, __u32 off)
{
	__u32 i = off >> 6;
	barrier_var(i);
	return &s->starts[i & (CE_DNS_WORDS - 1)];
}

/* The question's name, a label per step: mark where each label starts. */
static long qname_step(__u32 index, void *which)
{
	struct dns_scratch *s = scratch(which);
	if (!s)
		return 1;
	struct dns_walk *w = &s->w;
	__u32 off = w->off;

	if (off >= w->end || off - CE_DNS_HEADER > CE_DNS_MAX_NAME) {
		w->bad = 1;
		return 1;
	}
	__u8 len = msg_at(s, off);
	if (len == 0) {
		w->qend = off;
		return 1;
	}
	if (len > 63) { /* a compression pointer has no place in a question */
		w->bad = 1;
		return 1;
	}
	*start_word(s, off) |= 1ULL << (off & 63);
	w->off = off + 1 + len;
	return 0;
}

/* The name backwards, a byte per step: at each label start look its suffix up. */
static long hash_step(__u32 index, void *which)
{
	struct dns_scratch *s = scratch(which);
	if (!s)
		return 1;
	struct dns_walk *w = &s->w;

	if (index >= w->qend - CE_DNS_HEADER)
		return 1;
	__u32 j = w->qend - 1 - index;
	__u8 c = msg_at(s, j);
	if (c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	w->hash = (w->hash ^ c) * CE_FNV_PRIME;
	if (w->query || !(*start_word(s, j) & (1ULL << (j & 63))))
		return 0;
	/* "*.example.com" covers the names below example.com, never example.com itself */
	struct ce_fqdn_key key = {.hash = w->hash, .kind = j == CE_DNS_HEADER ? CE_FQDN_EXACT : CE_FQDN_WILD};
	key.cgroup_id = w->cgid;
	if (bpf_map_lookup_elem(&fqdn_rules, &key)) {
		w->best_cg = key;
		w->found_cg = 1;
	}
	key.cgroup_id = 0;
	if (bpf_map_lookup_elem(&fqdn_rules, &key)) {
		w->best_all = key;
		w->found_all = 1;
	}
	return 0;
}

/* The answer section: an owner label, or a record's fixed part and data, per step. */
static long answer_step(__u32 index, void *which)
{
	struct dns_scratch *s = scratch(which);
	if (!s)
		return 1;
	struct dns_walk *w = &s->w;
	__u32 off = w->off;

	if (w->left == 0 || off >= w->end)
		return 1;
	if (w->owner) {
		__u8 b = msg_at(s, off);
		if ((b & 0xC0) == 0xC0) { /* a compression pointer ends the name */
			w->off = off + 2;
			w->owner = 0;
		} else if (b == 0) {
			w->off = off + 1;
			w->owner = 0;
		} else if (b > 63) {
			w->bad = 1;
			return 1;
		} else {
			w->off = off + 1 + b;
		}
		return 0;
	}
	if (off + 10 > w->end)
		return 1;
	__u16 type = (__u16)msg_at(s, off) << 8 | msg_at(s, off + 1);
	__u16 class = (__u16)msg_at(s, off + 2) << 8 | msg_at(s, off + 3);
	__u32 ttl = (__u32)msg_at(s, off + 4) << 24 | (__u32)msg_at(s, off + 5) << 16 |
		    (__u32)msg_at(s, off + 6) << 8 | msg_at(s, off + 7);
	__u16 rdlen = (__u16)msg_at(s, off + 8) << 8 | msg_at(s, off + 9);
	__u32 rd = off + 10;
	if (rd + rdlen > w->end)
		return 1; /* cut short (CE_DNS_LEN): the rest is the agent's to read */
	if (class == 1 && ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16))) {
		struct ce_addr_key ak = {.cgroup_id = w->cgid, .family = type == 1 ? 4 : 6};
		if (type == 1) {
#pragma unroll
			for (int k = 0; k < 4; k++)
				ak.addr[k] = msg_at(s, rd + k);
		} else {
#pragma unroll
			for (int k = 0; k < 16; k++)
				ak.addr[k] = msg_at(s, rd + k);
		}
		__u64 ttl_ns = (__u64)ttl * 1000000000ULL;
		if (ttl_ns > CE_DNS_MAX_TTL_NS)
			ttl_ns = CE_DNS_MAX_TTL_NS;
		struct ce_resolved r = {
			.expires_ns = w->now + (ttl_ns < CE_DNS_MIN_TTL_NS ? CE_DNS_MIN_TTL_NS : ttl_ns),
			.name_hash = w->hash,
			.pattern = w->pattern,
		};
		if (bpf_map_update_elem(&resolved, &ak, &r, BPF_ANY) == 0)
			w->written++;
	}
	w->off = rd + rdlen;
	w->owner = 1;
	w->left--;
	return w->left == 0;
}

/* The DNS message in a packet (after TCP's length prefix) read into s->rec.msg: its length,
 * 0 if the packet holds none (a handshake, an ACK, another protocol). */
static __always_inline __u32 dns_read(struct __sk_buff *skb, const struct ce_pkt *p, struct dns_scratch *s,
				      __u8 *flags)
{
	__u32 poff = p->payload;

	if (p->proto == CE_IPPROTO_TCP) {
		poff += 2; /* DNS over TCP: a message starts with its length */
		*flags |= CE_DNS_TCP;
	} else if (p->proto != CE_IPPROTO_UDP) {
		return 0;
	}
	if (skb->len < poff + CE_DNS_HEADER)
		return 0;
	__u64 len = (__u64)skb->len - poff; /* 64 bits: the clamp below bounds the register passed on */
	if (len > CE_DNS_LEN) {
		len = CE_DNS_LEN;
		*flags |= CE_DNS_CUT;
	}
	if (len < CE_DNS_HEADER || bpf_skb_load_bytes(skb, poff, s->rec.msg, len))
		return 0;
	return len;
}

/* The question's name walked and hashed (an answer's: its patterns looked up on the way):
 * the offset of its root label, 0 if it has no readable name. */
static __always_inline __u32 dns_question(struct dns_scratch *s, __u32 *which, __u64 cgid, __u32 len, __u8 query)
{
#pragma unroll
	for (int i = 0; i < CE_DNS_WORDS; i++)
		s->starts[i] = 0;
	struct dns_walk *w = &s->w;
	__builtin_memset(w, 0, sizeof(*w));
	w->cgid = cgid;
	w->hash = CE_FNV_OFFSET;
	w->now = bpf_ktime_get_ns();
	w->off = CE_DNS_HEADER;
	w->end = len;
	w->owner = 1;
	w->query = query;
	bpf_loop(CE_DNS_MAX_LABELS, qname_step, which, 0);
	__u32 qend = w->qend;
	if (w->bad || qend <= CE_DNS_HEADER || qend > CE_DNS_HEADER + CE_DNS_MAX_NAME)
		return 0; /* (the root's own name is no destination) */
	bpf_loop(qend - CE_DNS_HEADER, hash_step, which, 0);
	return qend;
}

static __always_inline int same_addr(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

static __always_inline int trusted(__u8 family, const __u8 *addr)
{
	struct ce_resolver_key rk = {.family = family};

	__builtin_memcpy(rk.addr, addr, 16);
	return bpf_map_lookup_elem(&dns_resolvers, &rk) != NULL;
}

/* The queries the packet's socket sent (NULL if none, or if it is no full socket). */
static __always_inline struct ce_dns_asked *asked_of(struct __sk_buff *skb, __u64 create)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&dns_asked, sk, NULL, create);
}

/* Whether the answer in s matches a query its socket sent (id, resolver, question), which is
 * forgotten then: one answer per query. */
static __always_inline int dns_matched(struct __sk_buff *skb, const struct ce_pkt *p, struct dns_scratch *s)
{
	struct ce_dns_asked *asked = asked_of(skb, 0);

	if (!asked)
		return 0;
	__u16 id = (__u16)s->rec.msg[0] << 8 | s->rec.msg[1];
	__u64 hash = s->w.hash;
#pragma unroll
	for (int i = 0; i < CE_DNS_ASKED; i++) {
		struct ce_dns_query *q = &asked->q[i];
		if (q->used && q->id == id && q->name_hash == hash && q->family == p->family &&
		    same_addr(q->addr, p->saddr)) {
			q->used = 0;
			return 1;
		}
	}
	return 0;
}

/* The record in s to the agent: its header, the question (or, where the name was not walked,
 * as much of the message as a question can take) and the peer's address. */
static __always_inline void dns_tell(struct __sk_buff *skb, struct dns_scratch *s, const struct ce_pkt *p,
				     const __u8 *peer, __u64 cgid, __u8 flags, __u32 size, __u32 len)
{
	s->rec.ts_ns = bpf_ktime_get_ns();
	s->rec.cgroup_id = cgid;
	s->rec.name_hash = s->w.hash;
	s->rec.flags = flags;
	s->rec.written = s->w.written;
	s->rec.pattern_kind = s->w.pattern.kind;
	s->rec.family = p->family;
	__builtin_memcpy(s->rec.peer, peer, 16);
	if (size > len)
		size = len;
	if (size > CE_DNS_LEN)
		size = CE_DNS_LEN;
	s->rec.len = size;
	if (bpf_perf_event_output(skb, &dns, BPF_F_CURRENT_CPU, &s->rec, offsetof(struct ce_dns, msg) + size))
		dns_stat(CE_DNS_STAT_LOST);
}

/* Over TCP, whether a segment starts an answer: the stream's first data, or where the last
 * answer said the next begins (a message carried inside another's data, starting a segment
 * the sender cut there, is no answer). Notes where the one after it begins. */
static __always_inline int tcp_message_start(struct __sk_buff *skb, const struct ce_pkt *p)
{
	struct ce_dns_asked *asked = asked_of(skb, 0);
	struct bpf_sock *sk = skb->sk;
	__u16 prefix;

	if (!asked || !sk)
		return 1; /* no query of the socket's: taught nothing whatever it is */
	if (asked->tcp_next) {
		if (p->seq != asked->tcp_next)
			return 0;
	} else {
		struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
		if (!tp || tp->bytes_received != 0)
			return 0;
	}
	if (bpf_skb_load_bytes(skb, p->payload, &prefix, 2))
		return 0;
	asked->tcp_next = (p->seq + 2 + bpf_ntohs(prefix)) ?: 1;
	return 1;
}

/* A packet from port 53 to a monitored cgroup (crossedge_in): if it holds a DNS response,
 * learn its addresses if it answers a query its socket sent, and tell the agent. */
static __always_inline void dns_answer(struct __sk_buff *skb, const struct ce_pkt *p, __u64 cgid)
{
	__u32 which = CE_DNS_ANSWERS;
	__u8 flags = 0;
	struct dns_scratch *s = scratch(&which);

	if (!s)
		return;
	__u32 len = dns_read(skb, p, s, &flags);
	if (!len || (p->proto == CE_IPPROTO_TCP && !tcp_message_start(skb, p)))
		return;
	__u8 *m = s->rec.msg;
	__u16 qdcount = (__u16)m[4] << 8 | m[5];
	if (!(m[2] & 0x80) || (m[2] & 0x78) || qdcount != 1) { /* a response to a standard query */
		dns_stat(CE_DNS_STAT_BAD);
		return;
	}
	__u32 qend = dns_question(s, &which, cgid, len, 0);
	if (!qend) {
		dns_stat(CE_DNS_STAT_BAD);
		return;
	}
	struct dns_walk *w = &s->w;
	w->pattern.kind = CE_FQDN_NOTHING;
	if (w->found_cg)
		w->pattern = w->best_cg; /* a container's entries include every container's patterns */
	else if (w->found_all)
		w->pattern = w->best_all;
	w->left = (__u16)m[6] << 8 | m[7];
	w->off = qend + 1 + 4; /* the root label, QTYPE, QCLASS */
	if (dns_matched(skb, p, s)) {
		struct ce_scan *entry = scan_entry(cgid);
		if (entry && !entry->named)
			entry->named = 1; /* before its addresses are written: a call that finds one looks */
		if ((m[3] & 0x0f) == 0 && w->left) /* NOERROR */
			bpf_loop(CE_DNS_MAX_STEPS, answer_step, &which, 0);
	} else {
		flags |= CE_DNS_UNMATCHED | (trusted(p->family, p->saddr) ? 0 : CE_DNS_UNTRUSTED);
		dns_stat(CE_DNS_STAT_UNMATCHED);
	}
	dns_stat(CE_DNS_STAT_ANSWERS);
	dns_tell(skb, s, p, p->saddr, cgid, flags, qend + 5, len); /* the header and the question */
}

/* Docker's embedded resolver: user-defined networks DNAT 127.0.0.11:53 to a port of its own
 * in the container's OUTPUT chain, before cgroup egress sees the query. */
#define CE_DOCKER_DNS 0x0b00007f /* 127.0.0.11, as the bytes of an address read as a __u32 */

/* Whether crossedge_out hands the packet to dns_sent: to or from port 53, a fragment (which
 * hides its ports), or to Docker's embedded resolver whatever its port. */
static __always_inline int dns_related(const struct ce_pkt *p)
{
	__u32 d4;

	__builtin_memcpy(&d4, p->daddr, 4);
	return p->sport == bpf_htons(CE_DNS_PORT) || p->dport == bpf_htons(CE_DNS_PORT) || p->fragment ||
	       p->proto == CE_IPPROTO_FRAGMENT || (p->family == 4 && d4 == CE_DOCKER_DNS);
}

/* A packet a monitored container sends to or from port 53 (crossedge_out): a query to a
 * trusted resolver is remembered with its socket. Anything sent from a trusted resolver's
 * port 53, or as a fragment from its address (which hides the port), is a container
 * answering as that resolver: dropped (0) and reported, whatever it holds (a UDP GSO
 * packet's first segment may be a query and its second a forged answer). */
static __always_inline int dns_sent(struct __sk_buff *skb, const struct ce_pkt *p, __u64 cgid)
{
	int unported = p->fragment || p->proto == CE_IPPROTO_FRAGMENT;
	int as_resolver = (p->sport == bpf_htons(CE_DNS_PORT) || unported) && trusted(p->family, p->saddr);
	__u32 d4, which = CE_DNS_SENT;
	__u8 flags = 0;

	__builtin_memcpy(&d4, p->daddr, 4);
	int to_resolver = !unported && (p->dport == bpf_htons(CE_DNS_PORT) || (p->family == 4 && d4 == CE_DOCKER_DNS)) &&
			  trusted(p->family, p->daddr);
	if (!as_resolver && !to_resolver)
		return 1;
	struct dns_scratch *s = scratch(&which);
	if (!s)
		return as_resolver ? 0 : 1;
	__u32 len = unported ? 0 : dns_read(skb, p, s, &flags);
	if (as_resolver) {
		__builtin_memset(&s->w, 0, sizeof(s->w));
		dns_stat(CE_DNS_STAT_FORGED);
		dns_tell(skb, s, p, p->saddr, cgid, flags | CE_DNS_FORGED, CE_DNS_HEADER + CE_DNS_MAX_NAME + 5, len);
		return 0;
	}
	__u8 *m = s->rec.msg;
	__u16 qdcount = (__u16)m[4] << 8 | m[5];
	if (!len || (m[2] & 0xf8) || qdcount != 1 || !dns_question(s, &which, cgid, len, 1))
		return 1; /* no standard query with one question: nothing to answer */
	struct ce_dns_asked *asked = asked_of(skb, BPF_SK_STORAGE_GET_F_CREATE);
	if (!asked)
		return 1;
	struct ce_dns_query *q = &asked->q[asked->next & (CE_DNS_ASKED - 1)];
	asked->next++;
	q->name_hash = s->w.hash;
	__builtin_memcpy(q->addr, p->daddr, 16);
	q->id = (__u16)m[0] << 8 | m[1];
	q->family = p->family;
	q->used = 1;
	dns_stat(CE_DNS_STAT_QUERIES);
	return 1;
}

/* The name rules' decision for a call to addr by cgid, or NULL: the first rule of the
 * pattern the container's answer chose (or, for an address it never resolved or whose
 * TTL ran out, of `none`: DNS servers themselves, port 53, excepted) whose port fits.
 * `resolved` is looked at only for a container a DNS answer reached (scan->named; a
 * container without a scans entry, the table being full, looks too). */
static __always_inline struct ce_rule *fqdn_rule(__u64 cgid, int own, __u8 family, const __u8 *addr, __u16 port,
						  struct ce_scan *scan, __u64 *name_hash, struct ce_rule *out)
{
	struct ce_addr_key ak = {.cgroup_id = cgid, .family = family};
	struct ce_fqdn_rules *list = NULL;
	struct ce_resolved *r = NULL;

	if (family == 4)
		__builtin_memcpy(ak.addr, addr, 4);
	else
		__builtin_memcpy(ak.addr, addr, 16);
	if (!scan || scan->named) /* (a random bucket of a large table: a cache miss a call) */
		r = bpf_map_lookup_elem(&resolved, &ak);
	struct ce_fqdn_key pk = {.cgroup_id = cgid, .kind = CE_FQDN_NONE};
	if (r) {
		barrier_var(r); /* no address of its fields before this check */
		if (r->expires_ns > bpf_ktime_get_ns()) {
			*name_hash = r->name_hash;
			pk = r->pattern;
		}
	}
	if (pk.kind == CE_FQDN_NONE) {
		if (port == bpf_htons(CE_DNS_PORT))
			return NULL;
		list = own ? bpf_map_lookup_elem(&fqdn_rules, &pk) : NULL;
		if (!list) {
			__u32 zero = 0;
			list = bpf_map_lookup_elem(&fqdn_unnamed, &zero);
		}
	} else if (pk.kind != CE_FQDN_NOTHING) {
		list = bpf_map_lookup_elem(&fqdn_rules, &pk);
	}
	if (!list)
		return NULL;
#pragma unroll
	for (int k = 0; k < CE_FQDN_RULES; k++) {
		if (k >= list->count)
			break;
		struct ce_fqdn_rule *rule = &list->rules[k];
		if (rule->port == 0 || rule->port == port) {
			out->rank = rule->rank;
			out->slot = rule->slot;
			out->action = rule->action;
			out->audit = rule->audit;
			return out;
		}
	}
	return NULL;
}
