/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quiet.bpf.h - files no open rule names, remembered per CPU so that their next open skips
 * the walk.
 *
 * Part of enforce_connect.bpf.o (after path.bpf.h). Resolving an opened file's path costs
 * more than the open itself on a fast filesystem; most opens in a container are of files no
 * rule or watch names. Once a walk finds that (no pattern, identity or watch for any
 * access), the file is remembered in a direct-mapped per-CPU table, with everything its
 * path depends on:
 *
 *   the dentry, its parent and its name (hash and length), its inode, inode number and
 *     generation: a renamed or replaced file, or a dentry freed and reused, no longer
 *     matches;
 *   the mount and its namespace (a unique id) and the namespace's mount event counter,
 *     which the kernel bumps on every mount, unmount, move and propagation in it;
 *   `pgen`: [0] renames anywhere on the node (the rename exit hooks bump it: a directory
 *     moved changes every path under it), [1] the agent's policy version, rewritten as 0
 *     before it changes any pattern map and as a new value once it is done (0: nothing is
 *     remembered or believed), [2] renames in flight (from their entry to their exit:
 *     while any is, nothing is remembered or believed, so the instant between a move and
 *     its exit's bump cannot be used).
 *
 * Only files on filesystems whose renames all come through the rename calls are
 * remembered (overlayfs, ext4, xfs, btrfs, tmpfs): a network filesystem moves directories
 * when another client renamed them. A remembered file's next open costs one table read
 * and these compares. Anything that does not fit (a cut or detached path, an anonymous
 * mount namespace, a file some rule or watch names) is never remembered. The table is per
 * CPU and programs do not nest on a CPU, so an entry is never read half-written.
 */

#define CE_QUIET_SLOTS 1024 /* per CPU */

struct ce_quiet {
	__u64 dentry;
	__u64 parent;
	__u64 name; /* d_name.hash_len */
	__u64 inode;
	__u64 ino;
	__u64 generation;
	__u64 mnt;
	__u64 ns_id;
	__u64 ns_event;
	__u64 renames;
	__u64 version;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CE_QUIET_SLOTS);
	__type(key, __u32);
	__type(value, struct ce_quiet);
} quiet SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} pgen SEC(".maps");

#define CE_GEN_RENAMES 0
#define CE_GEN_POLICY 1
#define CE_GEN_RENAMING 2
#define CE_OVERLAYFS_MAGIC 0x794c7630
#define CE_EXT4_MAGIC 0xef53
#define CE_XFS_MAGIC 0x58465342
#define CE_BTRFS_MAGIC 0x9123683e
#define CE_TMPFS_MAGIC 0x01021994

struct mnt_namespace___seq { /* before 6.18 the namespace's unique id was `seq` */
	__u64 seq;
} __attribute__((preserve_access_index));

/* What a file's path depends on, into *s; 0, or -1 if remembering is off (or a rename is
 * under way) or the file cannot be remembered. */
static __always_inline int quiet_describe(struct file *file, struct ce_quiet *s)
{
	__u32 renames = CE_GEN_RENAMES, policy = CE_GEN_POLICY, renaming = CE_GEN_RENAMING;
	__u64 *gen_renames = bpf_map_lookup_elem(&pgen, &renames);
	__u64 *gen_policy = bpf_map_lookup_elem(&pgen, &policy);
	__u64 *in_flight = bpf_map_lookup_elem(&pgen, &renaming);

	if (!gen_renames || !gen_policy || !in_flight || !*gen_policy || *in_flight || !file || !bpf_rdonly_cast)
		return -1;
	s->version = *gen_policy;
	s->renames = *gen_renames;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct dentry *dentry = file->f_path.dentry;
	struct vfsmount *vfsmnt = file->f_path.mnt;
	if (!dentry || !vfsmnt)
		return -1;
	struct mount *mnt = bpf_rdonly_cast(container_of(vfsmnt, struct mount, mnt), bpf_core_type_id_kernel(struct mount));
	struct mnt_namespace *ns = mnt->mnt_ns;
	struct inode *inode = dentry->d_inode;
	if (!ns || !inode)
		return -1;
	struct super_block *sb = inode->i_sb;
	unsigned long magic = sb ? sb->s_magic : 0;
	if (magic != CE_OVERLAYFS_MAGIC && magic != CE_EXT4_MAGIC && magic != CE_XFS_MAGIC && magic != CE_BTRFS_MAGIC &&
	    magic != CE_TMPFS_MAGIC)
		return -1;
	s->dentry = (__u64)dentry;
	s->parent = (__u64)dentry->d_parent;
	s->name = dentry->d_name.hash_len;
	s->inode = (__u64)inode;
	s->ino = inode->i_ino;
	s->generation = inode->i_generation;
	s->mnt = (__u64)vfsmnt;
	if (bpf_core_field_exists(ns->ns.ns_id))
		s->ns_id = ns->ns.ns_id;
	else
		s->ns_id = BPF_CORE_READ((struct mnt_namespace___seq *)ns, seq);
	s->ns_event = ns->event;
	return s->ns_id ? 0 : -1; /* (an anonymous namespace, open_tree()'s or fsmount()'s, has no id) */
}

static __always_inline __u32 quiet_slot(struct ce_quiet *s)
{
	__u64 h = (s->name ^ (s->ino << 32) ^ s->ino) * 0x9e3779b97f4a7c15ULL; /* (the name's hash is salted by its parent) */

	return (h >> 40) & (CE_QUIET_SLOTS - 1);
}

/* Is the described file remembered as named by no rule? */
static __always_inline int quiet_before(struct ce_quiet *s)
{
	__u32 slot = quiet_slot(s);
	struct ce_quiet *e = bpf_map_lookup_elem(&quiet, &slot);

	return e && e->dentry == s->dentry && e->parent == s->parent && e->name == s->name && e->inode == s->inode &&
	       e->ino == s->ino && e->generation == s->generation && e->mnt == s->mnt && e->ns_id == s->ns_id &&
	       e->ns_event == s->ns_event && e->renames == s->renames && e->version == s->version;
}

static __always_inline void quiet_remember(struct ce_quiet *s)
{
	__u32 slot = quiet_slot(s);

	bpf_map_update_elem(&quiet, &slot, s, BPF_ANY);
}

/* A rename call begins (+1) or ends (-1) somewhere on the node; at its end every
 * remembered path may have moved. */
static __always_inline void quiet_renaming(long delta)
{
	__u32 renames = CE_GEN_RENAMES, renaming = CE_GEN_RENAMING;
	__u64 *gen = bpf_map_lookup_elem(&pgen, &renames);
	__u64 *in_flight = bpf_map_lookup_elem(&pgen, &renaming);

	if (delta < 0 && gen)
		__sync_fetch_and_add(gen, 1);
	if (in_flight)
		__sync_fetch_and_add(in_flight, delta);
}
