/* Types shared by enforce_connect.bpf.c and its decoder, monitor/kernel/layout.py.
 * A test compares the decoder's sizes and offsets with the BTF of the built object. */
#ifndef CROSSEDGE_ENFORCE_CONNECT_H
#define CROSSEDGE_ENFORCE_CONNECT_H

#define CE_RULE_ID_LEN 64
#define CE_MAX_SLOTS 16384   /* counted rules; slot 0 counts "no rule matched" */
#define CE_MAX_ENTRIES 65536 /* entries per trie */
#define CE_MAX_MONITORED 65536 /* cgroups the rules apply to */
#define CE_MON 1 /* a `monitored` value: the rules apply to this cgroup... */
#define CE_MON_OWN 2 /* ...and it has entries of its own (rules4/6, fqdn_rules, scan_limits, limits) */
#define CE_MAX_FLOWS 65536   /* flows counted in the kernel (a full table sends every call) */
#define CE_WINDOW_NS 100000000ULL /* a flow sends at most one allowed call per window */

#define CE_ALLOW 0
#define CE_ALERT 1
#define CE_DENY 2

/* What the program did with a call (ce_event.verdict, ce_flow_key.verdict). */
#define CE_V_ALLOW 0 /* let through: no rule, or an allow/alert rule (the agent judges those) */
#define CE_V_DENY 1  /* refused: connect() fails with EPERM */
#define CE_V_AUDIT 2 /* an audit-mode deny rule matched: let through, reported */

/* Which call the programs judged (ce_event.op, ce_flow_key.op). */
#define CE_OP_CONNECT 0 /* connect(): TCP, or a UDP socket being connected */
#define CE_OP_SENDMSG 1 /* sendto()/sendmsg() with an address on an unconnected UDP socket */
#define CE_OP_PACKET 3 /* a packet no connect() or sendto() judge saw (a raw, ping or SCTP socket's), at egress */
#define CE_OP_FLOOD 2 /* not a call: a source's TCP SYNs at XDP reached a flood rule's threshold
		       * (ce_event: addr the source, port the last SYN's destination port, scan the
		       * SYNs counted in the window; cgroup_id 0) */

/* Container lifecycle records (ce_lifecycle.type), on the `lifecycle` perf array. A held
 * exec is told by its own exec record (ce_proc.held), so no second record on another pipe
 * can arrive before or after it. */
#define CE_LC_NEW 1 /* a container cgroup was made below an attach point: judged in the kernel */

/* LPM trie keys. The prefix always covers cgroup_id and port in full (80 bits), then
 * prefixlen - 80 bits of the address. cgroup_id 0 = every monitored container;
 * port 0 = any port (network byte order otherwise). */
struct ce_key4 {
	__u32 prefixlen;
	__u64 cgroup_id;
	__u16 port;
	__u8 addr[4];
} __attribute__((packed));

struct ce_key6 {
	__u32 prefixlen;
	__u64 cgroup_id;
	__u16 port;
	__u8 addr[16];
} __attribute__((packed));

/* What a key decides. rank orders rules (lower wins, as in the rule engine); the agent
 * flattens the rule set so a trie's longest match is its bucket's first match. */
struct ce_rule {
	__u32 rank;
	__u32 slot;
	__u8 action;
	__u8 audit; /* 1: count and report a would-be deny, let the connection through */
	__u8 pad[2];
	char rule_id[CE_RULE_ID_LEN];
};

/* A flow: who called connect() where (under which name), and what the program decided. */
struct ce_flow_key {
	__u64 cgroup_id;
	__u32 slot; /* the deciding rule's counter slot, 0 = no rule */
	__u16 port; /* network byte order */
	__u8 family; /* 4 or 6 */
	__u8 verdict;
	__u8 addr[16];
	__u8 op;
	__u8 pad[7];
	__u64 name_hash; /* the name the address was resolved from (ce_name_hash), 0: none */
};

struct ce_flow {
	__u64 window_ns; /* when this flow last sent a call as an event */
	__u64 folded; /* calls counted instead of sent, since the flow's entry was made */
};

/* One call sent through the perf event array: the first allowed call of its flow in each
 * window, and every deny or audited would-be deny. */
struct ce_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u64 folded; /* the flow's counter as this call saw it (cumulative) */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 slot;
	__u16 port; /* network byte order */
	__u8 family; /* 4 or 6 */
	__u8 verdict;
	__u8 addr[16];
	char comm[16];
	char rule_id[CE_RULE_ID_LEN];
	__u8 op;
	__u8 pad[3];
	__u32 scan; /* this call crossed a scan rule's threshold (ce_scan_rule): the new
		     * destinations seen in the window, and the rule judged it; 0 otherwise */
	__u64 name_hash; /* the name the container resolved for addr (ce_name_hash), 0: none */
};

/* A container cgroup the kernel classified at mkdir. */
struct ce_lifecycle {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u64 parent_id; /* the parent cgroup */
	__u32 type;
	__u32 pad;
};

/* Processes (process.bpf.h) and files (file.bpf.h): exec, exit and open records on the
 * `procs` perf array, and the calls refused to protect an open deny. */
#define CE_PROC_EXEC 1
#define CE_PROC_EXIT 2
#define CE_PROC_OPEN 3
#define CE_PROC_REFUSE 4 /* a call refused (the caller, or the child it made, killed): ce_proc.how says which */
#define CE_PROC_SOCKET 5 /* a raw, packet, ICMP or SCTP socket made (sock.bpf.h): ce_proc.how is its CE_SOCK_*,
			  * exit_code the result (0 or -EPERM), lifetime_ns family << 32 | type << 16 | protocol */
#define CE_PATH_LEN 256 /* a path as resolved (longer ones are cut, flagged) */
#define CE_ARGS_LEN 256 /* argv, NUL separated, cut at this length */
#define CE_MATCH_LEN 128 /* a pattern key's bytes: the field, then up to 127 bytes of path */
#define CE_DATA_LEN 1024 /* room for a path, argv and the name given, at any offset the verifier allows */

/* ce_proc.how */
#define CE_HOW_LOADER 1 /* exec: the first file a bare dynamic loader (ld.so BIN) opened, judged as its exec */
#define CE_HOW_IO_URING 2 /* refuse: io_uring_setup() (its opens never reach the open tracepoints) */
#define CE_HOW_CLONE_FILES 3 /* refuse: clone(CLONE_FILES) without CLONE_THREAD: the child was killed */
#define CE_HOW_PIDFD_GETFD 4 /* refuse: pidfd_getfd(): another process's descriptors */
#define CE_HOW_CLONE_PARENT 5 /* refuse: as CE_HOW_CLONE_FILES, on a kernel that cannot signal the child: the caller */
#define CE_HOW_RUNTIME 7 /* exec: by a process in the host's mount namespace (the runtime setting the container
			  * up, or a process moved in from the host): reported, not judged */
/* open records of a call that changes a file in place, refused (EPERM) where files are made
 * immutable (CE_PC_GUARD): the names it gave in data (path, then the second in "given"; an
 * *at() call's directory descriptor in lifetime_ns), or, for the f*() calls, the file's path */
#define CE_HOW_TRUNCATE 8
#define CE_HOW_RENAME 9
#define CE_HOW_UNLINK 10
#define CE_HOW_LINK 11
#define CE_HOW_CHMOD 12
#define CE_HOW_CHOWN 13
#define CE_HOW_COMPAT 14 /* refuse: a 32-bit (or x32) system call, which no syscall tracepoint sees */
#define CE_HOW_CGROUPS 15 /* refuse: a cgroup made inside a container past CE_MAX_NESTED, or a process moved
			   * into one (its maker, or the process, killed) */
#define CE_MAX_NESTED 1024 /* cgroups inside one container that are judged (each takes a `monitored` entry) */

/* A file as it was when the kernel saw it: a content hash the agent computed for it holds
 * while all of these stay (a write changes ctime). `exec_hashes` keys on it. */
struct ce_hash_key {
	__u64 dev; /* as the kernel encodes it */
	__u64 ino;
	__u64 size;
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 pad;
};

/* Sent with only the bytes of `data` it uses (the record's size is the pipeline's cost). */
struct ce_proc {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u64 start_ns; /* the process's start (CLOCK_MONOTONIC): with pid, its identity */
	__u64 lifetime_ns; /* exit: how long the process lived */
	__u64 folded; /* its group's counter as this record saw it (cumulative; see ce_proc_key) */
	__u32 type; /* CE_PROC_* */
	__u32 pid; /* thread group id */
	__u32 ppid; /* the real parent's thread group id */
	__u32 uid;
	__u32 gid;
	__s32 exit_code; /* exit: wait status as the parent sees it (code << 8, or the signal);
			  * open: the call's result (a file descriptor, or -errno) */
	__u32 slot; /* exec, open, refuse: the deciding rule's counter slot, 0 = none */
	__u16 path_len; /* bytes of data holding the path as resolved, its NUL included */
	__u16 args_len; /* bytes of data after the path holding argv, NUL separated */
	__u8 verdict; /* exec, open: CE_V_* */
	__u8 cut; /* 1: the path or argv was longer than its share of data */
	__u8 access; /* open: CE_ACC_* bits */
	__u8 held; /* exec: stopped (SIGSTOP) until the agent has listed its new container (bit 1), has
		    * looked up the files of the rules' exact paths as this new mount namespace sees them (2),
		    * has hashed the file (4: a content hash rule decides it, and the file is new to it) */
	__u16 given_len; /* bytes of data after argv: the name as given (execve's, a failed open's), NUL included */
	__u8 fileless; /* the file has no name left (memfd, a deleted file): nothing on disk to look at */
	__u8 how; /* CE_HOW_*, 0 for an ordinary exec or open */
	struct ce_hash_key file; /* exec: the file that runs */
	char comm[16];
	char pcomm[16]; /* the parent's task name */
	char data[CE_DATA_LEN]; /* path, then argv, then the name as given */
};

/* A group of like records, counted in the kernel instead of sent one by one (as flows
 * are for connections): execs of one binary by one parent, exits of one task name with
 * one status by one parent, opens of one path with one access and outcome. hash is
 * FNV-1a over the path (exec, open: its NUL included) or the 16 bytes of the task name
 * (exit); ppid holds an open's access bits; exit_code an exit's status or an open's
 * -errno (0 for every success). */
struct ce_proc_key {
	__u64 cgroup_id;
	__u64 hash;
	__u32 ppid;
	__u32 type;
	__s32 exit_code;
	__u32 pad;
};

/* Files (file.bpf.h): what an open asked for and got. */
#define CE_ACC_READ 1
#define CE_ACC_WRITE 2
#define CE_ACC_CREATE 4
#define CE_ACC_TRUNC 8
#define CE_ACCESSES 4

/* Exec and open rules, judged by the file the kernel resolved (path.bpf.h). The agent
 * gives each rule the kernel can judge a bit, in rank order, per kind (exec, open): a
 * rule matches when every field it names matches, and the lowest set bit of the rules
 * that match is the first match. Each field of a rule is an exact path, a prefix (a
 * glob ending in its only star), a suffix (starting with it) or both (a star between):
 * see monitor/kernel/patterns.py. A field a rule does not name matches anything. */
#define CE_PRULES 64 /* rules per kind the kernel judges */
#define CE_K_EXEC 0
#define CE_K_OPEN 1
#define CE_F_EXEC 0 /* the file exec'd (what runs: an interpreter for a script) */
#define CE_F_EXEC_PARENT 1 /* the exec'ing process's parent's binary */
#define CE_F_OPEN 2 /* the file opened */
#define CE_F_OPEN_BINARY 3 /* the opener's binary */
#define CE_F_OPEN_PARENT 4 /* the opener's parent's binary */
#define CE_FIELDS 5

/* A key of `pat_fwd` (prefixes; an exact path includes its NUL) or `pat_rev` (suffixes,
 * the path's last bytes reversed): the field matched in full, then prefixlen - 8 bits. */
struct ce_pat_key {
	__u32 prefixlen;
	__u8 field;
	char path[CE_MATCH_LEN - 1];
} __attribute__((packed));

/* Flattened by the agent: an entry carries the bits of every entry whose path is a prefix
 * of its own, so the longest match holds every rule whose pattern matches. */
struct ce_pat {
	__u64 mask;
	__u8 watch; /* CE_F_OPEN in pat_fwd: accesses (CE_ACC_*) reported below this path (watches) */
	__u8 pad[7];
};

/* A file by identity (`pat_ids`): an exact path's rules hold for every name of its file
 * (hard links, bind mounts), written by the agent from what it found in each container. */
struct ce_id_key {
	__u64 dev; /* the superblock's dev_t as the kernel encodes it (major << 20 | minor) */
	__u64 ino;
};

struct ce_id {
	__u64 mask[CE_FIELDS];
};

struct ce_prule {
	__u32 slot;
	__u8 action;
	__u8 audit;
	__u16 min_len[3]; /* a prefix-and-suffix field: the shortest path it matches (exec: exec, parent;
			   * open: opened, binary, parent) */
};

#define CE_PC_ON 1 /* written by the agent: until then nothing is judged */
#define CE_PC_IDS 2 /* pat_ids holds entries */
#define CE_PC_LOADER 4 /* exec rules exist: a bare dynamic loader's first open is judged as its exec */
#define CE_PC_IO_URING 8 /* io_uring_setup() is refused where an open deny applies */
#define CE_PC_OPENS 16 /* an open rule or a watch exists: opens are judged */
#define CE_PC_GUARD 64 /* the agent made files immutable (a write deny): calls refused with EPERM are reported */
#define CE_PC_NS_HOLD 32 /* rules name exact paths: an exec in a mount namespace its cgroup had no exec in
			  * yet is held until the agent has looked the paths' files up through it */

/* `pconfig`, one array entry. */
struct ce_pconfig {
	__u64 def_fwd[CE_FIELDS]; /* rules naming no prefix (nor exact path) in the field */
	__u64 def_rev[CE_FIELDS]; /* rules naming no suffix in the field */
	__u64 every[2]; /* by kind: rules for every monitored container (others: `pscope`) */
	__u64 access[CE_ACCESSES]; /* open rules naming each access */
	__u64 fileless; /* exec rules for files with no name (memfd, deleted) only */
	__u64 sha; /* exec rules naming content hashes: they match a file `exec_hashes` has their bit for */
	__u64 denies[2]; /* by kind: rules that deny, enforcing */
	__u32 flags; /* CE_PC_* */
	__u32 host_mnt_ns; /* the host's mount namespace (inode number): its processes are the runtime's, not judged */
	__u8 suffix_len[CE_FIELDS]; /* the longest suffix a rule names in the field (0: none) */
	__u8 pad[3];
	struct ce_prule rules[2][CE_PRULES];
};

/* exec_hashes' value: the content hash rules (bits) whose digests the file has. */
struct ce_hash {
	__u64 mask;
};

/* `pscope`: per container, the rules naming containers that apply to it, by kind. */
struct ce_pscope {
	__u64 mask[2];
};

/* DNS (dns.bpf.h): the answers the monitored containers receive, parsed in the kernel so
 * that a deny by name holds from the connect() that follows the answer.
 * A name's hash (ce_name_hash) is FNV-1a 64 over its wire form without the root label
 * ("\3api\7example\3com"), lower case, taken from the last byte to the first, so one
 * backwards pass yields the hash of every suffix at its label start. */
#define CE_DNS_LEN 1024 /* bytes of a DNS message read (a longer one is parsed that far, flagged) */
#define CE_MAX_RESOLVED 65536 /* (cgroup, address) pairs remembered (least recently used go) */
#define CE_DNS_MIN_TTL_NS 1000000000ULL /* a TTL of 0 still covers the connect() that follows */
#define CE_DNS_MAX_TTL_NS 3600000000000ULL /* an hour at most: a TTL of 2^31 s is not taken as given */
#define CE_FQDN_RULES 8 /* rules per name pattern (the agent flattens them, in rank order) */
#define CE_FQDN_EXACT 0 /* ce_fqdn_key.kind: the name itself */
#define CE_FQDN_WILD 1 /* every name below this suffix ("*.example.com") */
#define CE_FQDN_NONE 2 /* an address the container never resolved (hash 0) */
#define CE_FQDN_NOTHING 255 /* ce_resolved.pattern.kind: no pattern matched the name */
#define CE_DNS_CUT 1 /* ce_dns.flags: the message was longer than CE_DNS_LEN */
#define CE_DNS_TCP 2 /* ... it came over TCP */
#define CE_DNS_UNMATCHED 4 /* ... it answered no query the receiving socket sent: it taught nothing */
#define CE_DNS_UNTRUSTED 8 /* ... it came from no resolver the node trusts (with CE_DNS_UNMATCHED) */
#define CE_DNS_FORGED 16 /* a monitored container sent it from a trusted resolver's address: dropped */
#define CE_DNS_ASKED 16 /* queries remembered per socket (the oldest make way) */

/* The rules of one name pattern in one scope (cgroup_id 0: every monitored container; a
 * container's own entries include every-container rules, flattened by the agent). */
struct ce_fqdn_key {
	__u64 cgroup_id;
	__u64 hash; /* ce_name_hash of the name (exact) or of the suffix (wild); 0 for none */
	__u8 kind; /* CE_FQDN_* */
	__u8 pad[7];
};

struct ce_fqdn_rule {
	__u32 rank;
	__u32 slot;
	__u16 port; /* network byte order; 0 = any port */
	__u8 action;
	__u8 audit;
};

/* Rank order; the first whose port fits decides (an any-port rule ends the list). */
struct ce_fqdn_rules {
	__u32 count;
	__u32 pad;
	struct ce_fqdn_rule rules[CE_FQDN_RULES];
};

/* An address a container learned from an answer. */
struct ce_addr_key {
	__u64 cgroup_id;
	__u8 family; /* 4 or 6 */
	__u8 pad[7];
	__u8 addr[16];
};

struct ce_resolved {
	__u64 expires_ns; /* CLOCK_MONOTONIC: the record's TTL (at least CE_DNS_MIN_TTL_NS) */
	__u64 name_hash; /* the name asked for (the question), whatever CNAMEs led here */
	struct ce_fqdn_key pattern; /* its most specific pattern, kind CE_FQDN_NOTHING if none */
};

/* One answer, sent on the `dns` perf array with the bytes of msg it holds. */
struct ce_dns {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id; /* the receiving socket's (CE_DNS_FORGED: the sending socket's) */
	__u64 name_hash;
	__u16 len; /* bytes of msg sent: the header and the question */
	__u8 flags; /* CE_DNS_* */
	__u8 written; /* addresses written to `resolved` */
	__u8 pattern_kind;
	__u8 family; /* of peer */
	__u8 pad[2];
	__u8 peer[16]; /* the address it came from (CE_DNS_FORGED: the one it claimed) */
	__u8 msg[CE_DNS_LEN];
};

/* Sockets that send past the connect() and sendto() judges (sock.bpf.h), by kind. */
#define CE_SOCK_RAW 1 /* AF_INET/AF_INET6 SOCK_RAW */
#define CE_SOCK_PACKET 2 /* AF_PACKET */
#define CE_SOCK_ICMP 3 /* ICMP "ping" sockets (SOCK_DGRAM, IPPROTO_ICMP/ICMPV6) */
#define CE_SOCK_SCTP 4 /* IPPROTO_SCTP */
#define CE_SOCK_UNIX 5 /* a unix socket connected to (or sent to) by path (unix_connect.bpf.c) */
#define CE_SOCK_RAW_TYPE 3 /* SOCK_RAW */

/* `unix_rules`: a scope's best-ranked rule for a unix socket path (FNV-1a 64 of the path as
 * written; an abstract name as "@name"). */
struct ce_unix_key {
	__u64 cgroup_id;
	__u64 hash;
};

/* `sock_rules`: a scope's (cgroup_id 0: every container) best-ranked rule for a kind of socket. */
struct ce_sock_key {
	__u64 cgroup_id;
	__u32 kind; /* CE_SOCK_* */
	__u32 pad;
};

/* A resolver the node trusts (`dns_resolvers`, written by the agent). */
struct ce_resolver_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* A query a socket sent to a trusted resolver, kept with the socket (`dns_asked`) until its
 * answer comes: an answer is learned only if it matches one (id, resolver, question). */
struct ce_dns_query {
	__u64 name_hash;
	__u8 addr[16]; /* the resolver asked */
	__u16 id;
	__u8 family;
	__u8 used;
	__u32 pad;
};

struct ce_dns_asked {
	__u32 next; /* the slot the next query takes */
	__u32 tcp_next; /* over TCP: the sequence number the next answer starts at (0: the first) */
	struct ce_dns_query q[CE_DNS_ASKED];
};

/* Scans (scan.bpf.h): per container, the calls to destinations it has no flow for yet
 * ("new destinations"), counted per one-second window. From `summarise` new destinations in
 * a window (and for as long as each window reaches it), a new destination's call is summed
 * into the container's `scans` entry instead of getting a flow and an event; scan rules
 * (a threshold each) alert, or refuse the container's connect()s for a while. */
#define CE_SCAN_WINDOW_NS 1000000000ULL
#define CE_SCAN_RULES 4 /* scan rules per scope (the agent flattens every-container ones in) */
#define CE_MAX_SCANS 65536
#define CE_SEEN_BITS 4096 /* a container's filter of destinations that ever had a flow (scan.bpf.h) */

struct ce_scan_rule {
	__u32 threshold; /* new destinations within one window */
	__u32 slot;
	__u64 hold_ns; /* deny: how long the container's calls are refused from the crossing on */
	__u8 action; /* CE_ALERT or CE_DENY */
	__u8 audit;
	__u8 pad[6];
	char rule_id[CE_RULE_ID_LEN];
};

/* Per scope (cgroup_id 0: every monitored container). */
struct ce_scan_limits {
	__u32 summarise; /* new destinations per window from which calls are summed, not sent */
	__u32 count; /* rules used */
	struct ce_scan_rule rules[CE_SCAN_RULES];
};

/* Per container, made by the programs at its first new destination. The cumulative counts
 * are never reset: the agent turns their growth into summary events (as with flows). */
struct ce_scan {
	__u64 window_ns; /* the current window's start */
	__u64 blocked_ns; /* until then (CLOCK_MONOTONIC) every call is judged by `rule` */
	__u64 calls; /* cumulative: calls summed here instead of sent */
	__u64 denied; /* cumulative: of those, refused */
	__u32 fresh; /* new destinations in the current window */
	__u32 pid; /* the process that started the current scan */
	__u8 scanning; /* the current scan: summing since the window it began in */
	__u8 over; /* scan rules (bits) whose threshold this window reached */
	__u8 over_before; /* ... the window before */
	__u8 family; /* of addr */
	__u16 port_lo; /* the current scan's ports, host byte order */
	__u16 port_hi;
	__u8 addr[16]; /* the current scan's first destination */
	__u32 deny_slot; /* the rule of the last refused call summed */
	__u32 uid; /* the user and group of the process that started the current scan */
	char comm[16];
	struct ce_rule rule; /* the scan rule crossed last (rank 0) */
	__u32 gid;
	__u8 named; /* a DNS answer reached it (dns.bpf.h): only then can its calls' addresses have names */
	__u8 pad[7];
	__u64 seen[CE_SEEN_BITS / 64]; /* a bit per destination hash, set before a flow to it is made */
};

/* Traffic (traffic.bpf.h): bytes and packets per container and flow, both ways. */
/* Flows per table (two tables: the agent drains one while the other fills). Per-CPU and
 * preallocated (a new flow per connect() must cost no allocation, a bulk transfer no shared
 * cache line): 2 x 32,768 x CPUs x 48 bytes, 6 MiB on 2 CPUs, 48 MiB on 16. */
#define CE_MAX_TRAFFIC 32768
#define CE_PROTO_OTHER 0 /* ce_traffic_key.proto: flows a full table had no room for, summed */

struct ce_traffic_key {
	__u64 cgroup_id;
	__u8 family; /* 4 or 6 */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP, another, or CE_PROTO_OTHER */
	__u16 local_port; /* host byte order; 0 for protocols without ports */
	__u16 remote_port;
	__u8 pad[2];
	__u8 remote[16];
};

struct ce_traffic {
	__u64 bytes_in; /* IP packets' bytes, headers included */
	__u64 bytes_out;
	__u64 payload_in; /* bytes above TCP/UDP: what the applications sent */
	__u64 payload_out;
	__u64 packets_in; /* segments: a GSO packet counts each */
	__u64 packets_out;
};

/* Ingress blocklist (xdp.bpf.h): rules naming a source network, flattened by the agent like
 * the connect tries (the longest match carries the best-ranked rule of every prefix that
 * holds it). */
struct ce_src_key4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ce_src_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct ce_block {
	__u64 expires_ns; /* CLOCK_MONOTONIC; 0: never */
	__u32 slot;
	__u8 action; /* CE_ALLOW, CE_ALERT (counted, passed), CE_DENY */
	__u8 audit;
	__u8 pad[2];
};

/* Limits (limits.bpf.h): a container's egress bytes per second and connect() calls per
 * second, each a virtual queue (the time at which what it let through would have left at
 * the rate). The agent writes the rates; the programs keep the rest. */
struct ce_limit {
	__u64 egress_rate; /* bytes per second; 0: no limit */
	__u64 egress_burst_ns; /* how far ahead of now the queue may run before packets are dropped */
	__u64 conn_rate; /* connect() and addressed datagrams per second; 0: no limit */
	__u64 conn_burst_ns;
	__u32 egress_slot;
	__u8 egress_audit; /* 1: counted as held back, let through */
	__u8 pad[3];
	struct ce_rule conn_rule; /* judges a call over the rate (its slot, audit, id) */
	/* kept by the programs (written as 0 by the agent) */
	__u64 egress_vq_ns;
	__u64 conn_vq_ns;
	__u64 held_bytes; /* cumulative: bytes dropped (or, audit, that would have been) */
	__u64 held_packets;
	__u64 refused; /* cumulative: calls refused (or, audit, that would have been) */
};

/* SYN floods (xdp.bpf.h): per source, TCP SYNs (without ACK) arriving at the XDP
 * interfaces, counted per one-second window. The flood rules are one ce_scan_limits (its
 * `summarise` unused) in the `flood_limits` array; a deny's source is dropped at XDP for
 * the rule's hold, from the SYN that reached the threshold on. */
#define CE_MAX_SOURCES 65536

struct ce_src {
	__u8 family;
	__u8 pad[7];
	__u8 addr[16];
};

struct ce_syn_rate {
	__u64 window_ns;
	__u32 syns; /* in the current window */
	__u8 over; /* flood rules (bits) whose threshold this window reached */
	__u8 over_before; /* ... the window before */
	__u8 pad[2];
};

/* A source held by a flood rule. */
struct ce_flooder {
	__u64 expires_ns; /* CLOCK_MONOTONIC */
	__u32 slot;
	__u8 audit; /* 1: counted and passed, not dropped */
	__u8 pad[3];
};

#endif
