/* SPDX-License-Identifier: GPL-2.0 */
/*
 * shared_maps.bpf.h - the maps both objects use: enforce_connect.bpf.o defines and pins
 * them, unix_connect.bpf.o (loaded apart, monitor/kernel/unix_hook.py) is given the pinned
 * ones. One definition, so the two cannot drift apart.
 */

/* Cgroups the rules apply to: container cgroups in scope and the cgroups below them. The
 * value is CE_MON, with CE_MON_OWN when the agent wrote entries keyed by the cgroup's own id
 * (its own rules or limits): without it the programs look only at every container's
 * entries, a third fewer lookups per connect() for a container with no rules of its own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, __u8);
} monitored SEC(".maps");

/* Per-rule decision counts, by slot. An array, so the lookup every call makes is inlined
 * (a hash cost ~20 ns more a call); the agent zeroes a slot before a rule takes it and
 * reads the slots its rules hold. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CE_MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} procs SEC(".maps");

/* Records that could be neither sent nor counted: [0] execs, [1] exits, [2] opens, [3] refusals,
 * [4] sockets (unix_connect.bpf.c's too). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} proc_lost SEC(".maps");

/* The unix socket rules (unix_connect.bpf.c's programs judge by them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, struct ce_unix_key);
	__type(value, struct ce_rule);
} unix_rules SEC(".maps");

/* The better ranked of two rules (either may be NULL). */
static __always_inline struct ce_rule *better(struct ce_rule *best, struct ce_rule *hit)
{
	if (hit && (!best || hit->rank < best->rank))
		return hit;
	return best;
}
