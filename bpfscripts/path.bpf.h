/* SPDX-License-Identifier: GPL-2.0 */
/*
 * path.bpf.h - a file as the kernel resolved it, and the exec and open rules that name it.
 *
 * Part of enforce_connect.bpf.o (included before process.bpf.h and file.bpf.h). Rules are
 * judged by the file itself, never by the string a process handed the kernel: a path is
 * the file's dentries walked up to the root of its mount namespace, across mounts (so a
 * symbolic link, "//", "/./", "..", /proc/self/root, /proc/self/fd/N, a chroot or a
 * relative name all come to the one path the file has), and an exact path's rules also
 * hold for the file's identity (device and inode: every hard link, every bind mount of it),
 * which the agent writes to `pat_ids` from what it finds in each container.
 *
 * Matching (struct ce_pconfig): each rule the kernel judges has a bit, in rank order per
 * kind (exec, open). For each field (the file exec'd or opened, the binary and the parent
 * of the process) one lookup in `pat_fwd`, an LPM trie of prefixes and exact paths, gives
 * the rules whose prefix matches (the agent flattens every shorter prefix into a longer
 * one); where some rule still in play names a suffix, one lookup in `pat_rev` with the
 * path's last bytes reversed gives those whose suffix matches. A rule matches when every
 * field it names does; the lowest bit set is the first match. The walk reads no user
 * memory: the pointers are followed directly (bpf_rdonly_cast), one helper call a name.
 */

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#define CE_WALK_LEN 1024 /* a resolved path is built backwards in here; longer ones keep their end (cut) */
#define CE_WALK_DEPTH 48 /* directories (and mounts) walked up at most */
#define CE_W_MAIN 0 /* the walks' buffers: the file exec'd or opened... */
#define CE_W_BINARY 1 /* ...the process's binary... */
#define CE_W_PARENT 2 /* ...and its parent's */
#define CE_FMODE_READ 0x1
#define CE_FMODE_WRITE 0x2
#define CE_FMODE_CREATED 0x100000 /* the open made the file */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_pat_key);
	__type(value, struct ce_pat);
} pat_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_pat_key);
	__type(value, struct ce_pat);
} pat_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_ENTRIES);
	__type(key, struct ce_id_key);
	__type(value, struct ce_id);
} pat_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_pconfig);
} pconfig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CE_MAX_MONITORED);
	__type(key, __u64);
	__type(value, struct ce_pscope);
} pscope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, char[CE_WALK_LEN * 2]); /* twice: the verifier sees a name's offset and length apart */
} walks SEC(".maps");

struct ce_pat_scratch {
	struct ce_pat_key key;
	char slack[8]; /* a masked index past the key's last byte stays in the value */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ce_pat_scratch);
} pat_scratch SEC(".maps");

/* A resolved path: walks[which][pos .. pos + len - 1], its NUL last (len counts it). */
struct ce_rpath {
	__u32 pos;
	__u32 len;
	__u32 leaf; /* where the last component's name starts */
	__u32 which;
	__u8 cut; /* longer than the buffer: only its end is here */
	__u8 rooted; /* walked up to the mount namespace's root (not a detached tree, not cut short) */
};

struct ce_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u32 pos;
	__u32 which;
	__u32 leaf; /* where the first name added (the file's own) starts; 0 until then */
	__u8 cut;
	__u8 rooted;
};

/* One step up (bpf_loop's callback): prepend this dentry's name, or cross to where its
 * mount is mounted. Returns 1 at the mount namespace's root. */
static long walk_step(__u32 index, struct ce_walk *w)
{
	__u32 which = w->which;
	char *buf = bpf_map_lookup_elem(&walks, &which);
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;

	if (!buf || !dentry || !mnt)
		return 1;
	if (dentry == w->vfsmnt->mnt_root) { /* the top of a mount */
		struct mount *parent = mnt->mnt_parent;
		if (parent == mnt || !parent) {
			w->rooted = 1;
			return 1; /* the namespace's root: a chroot does not stop the walk */
		}
		w->dentry = mnt->mnt_mountpoint;
		w->mnt = parent;
		w->vfsmnt = &parent->mnt;
		return 0;
	}
	struct dentry *up = dentry->d_parent;
	if (up == dentry && w->pos != CE_WALK_LEN - 1)
		return 1; /* a root reached without a mount's top (a detached tree) */
	__u32 len = dentry->d_name.len;
	__u32 pos = w->pos;
	if (len + 1 > pos || pos >= CE_WALK_LEN) {
		w->cut = 1;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(buf + (pos & (CE_WALK_LEN - 1)), len & (CE_WALK_LEN - 1), dentry->d_name.name);
	if (!w->leaf)
		w->leaf = pos;
	pos -= 1;
	buf[pos & (CE_WALK_LEN - 1)] = '/';
	w->pos = pos;
	w->dentry = up;
	return up == dentry; /* a file with no parent at all (memfd): its own name is its path */
}

/* The path of a file in its mount namespace into walks[which]; 0, or -1 if unknown. */
static __always_inline int resolve(struct file *file, __u32 which, struct ce_rpath *out)
{
	char *buf = bpf_map_lookup_elem(&walks, &which);

	if (!buf || !file || !bpf_rdonly_cast)
		return -1; /* (a kernel before 6.2 cannot follow the pointers: nothing is resolved) */
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct vfsmount *vfsmnt = file->f_path.mnt;
	struct ce_walk w = {.dentry = file->f_path.dentry, .vfsmnt = vfsmnt, .pos = CE_WALK_LEN - 1, .which = which};
	w.mnt = bpf_rdonly_cast(container_of(vfsmnt, struct mount, mnt), bpf_core_type_id_kernel(struct mount));
	buf[CE_WALK_LEN - 1] = 0;
	bpf_loop(CE_WALK_DEPTH, walk_step, &w, 0);
	__u32 pos = w.pos;
	if (pos >= CE_WALK_LEN - 1) { /* the root itself */
		pos = CE_WALK_LEN - 2;
		buf[pos] = '/';
	}
	out->pos = pos;
	out->len = CE_WALK_LEN - pos;
	out->which = which;
	out->cut = w.cut;
	out->rooted = w.rooted && !w.cut;
	out->leaf = w.leaf ?: CE_WALK_LEN - 1;
	return 0;
}

/* A file's identity as pat_ids keys it. */
static __always_inline struct ce_id *identity(struct file *file)
{
	struct ce_id_key key = {};

	if (!file || !bpf_rdonly_cast)
		return NULL;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = file->f_inode;
	if (!inode)
		return NULL;
	key.dev = inode->i_sb->s_dev;
	key.ino = inode->i_ino;
	return bpf_map_lookup_elem(&pat_ids, &key);
}

static __always_inline int fileless(struct file *file)
{
	if (!file || !bpf_rdonly_cast)
		return 0;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = file->f_inode;
	return inode && inode->__i_nlink == 0;
}

struct ce_reverse {
	char *buf;
	struct ce_pat_key *key;
	__u32 end; /* the path's last byte */
	__u32 n; /* bytes to reverse */
};

/* key->path[i] = the path's i-th byte from its end (bpf_loop's callback). */
static long reverse_step(__u32 i, struct ce_reverse *r)
{
	__u32 at = i;

	if (at >= r->n || at >= CE_MATCH_LEN - 1)
		return 1;
	barrier_var(at);
	r->key->path[at & (CE_MATCH_LEN - 1)] = r->buf[(r->end - at) & (CE_WALK_LEN - 1)];
	return 0;
}

/* The rules (bits) whose pattern for `field` matches the path; `watch` gets the accesses
 * watches report there (the opened file's field only). */
static __always_inline __u64 field_mask(struct ce_pconfig *cfg, __u32 field, struct ce_rpath *p, struct ce_id *ids,
					__u8 *watch)
{
	__u32 zero = 0, which = p->which;
	struct ce_pat_key *key = bpf_map_lookup_elem(&pat_scratch, &zero);
	char *buf = bpf_map_lookup_elem(&walks, &which);

	if (field >= CE_FIELDS || !key || !buf)
		return 0;
	__u64 fwd = cfg->def_fwd[field], rev = cfg->def_rev[field];
	key->field = field;
	if (!p->cut) { /* (a cut path has lost its beginning: no prefix can be judged) */
		__u32 n = p->len < CE_MATCH_LEN - 1 ? p->len : CE_MATCH_LEN - 1; /* an exact path's NUL, if it fits */
		barrier_var(n);
		n &= CE_MATCH_LEN - 1;
		bpf_probe_read_kernel(key->path, n, buf + (p->pos & (CE_WALK_LEN - 1)));
		key->prefixlen = 8 + 8 * n;
		struct ce_pat *hit = bpf_map_lookup_elem(&pat_fwd, key);
		if (hit) {
			fwd |= hit->mask;
			if (watch)
				*watch |= hit->watch;
		}
	}
	if (ids)
		fwd |= ids->mask[field];
	__u32 m = cfg->suffix_len[field];
	if (m && (fwd & ~rev)) { /* some rule still in play names a suffix */
		struct ce_reverse r = {.buf = buf, .key = key, .end = p->pos + p->len - 2};
		r.n = m < p->len - 1 ? m : p->len - 1;
		bpf_loop(CE_MATCH_LEN - 1, reverse_step, &r, 0);
		key->prefixlen = 8 + 8 * r.n;
		struct ce_pat *hit = bpf_map_lookup_elem(&pat_rev, key);
		if (hit)
			rev |= hit->mask;
	}
	return fwd & rev;
}

/* Every container's rules of a kind, and those naming this one. */
static __always_inline __u64 scope_mask(struct ce_pconfig *cfg, __u32 kind, __u64 cgid, __u8 mon)
{
	__u64 mask = cfg->every[kind & 1];

	if (mon & CE_MON_OWN) {
		struct ce_pscope *own = bpf_map_lookup_elem(&pscope, &cgid);
		if (own)
			mask |= own->mask[kind & 1];
	}
	return mask;
}

struct ce_first {
	struct ce_prule *rules;
	__u64 cand;
	__u32 *lens;
	int bit;
};

/* Is bit i the first rule that fits (bpf_loop's callback)? */
static long first_step(__u32 i, struct ce_first *f)
{
	if (!(f->cand >> i))
		return 1;
	if (!((f->cand >> i) & 1) || i >= CE_PRULES)
		return 0;
	struct ce_prule *r = &f->rules[i & (CE_PRULES - 1)];
	__u32 *lens = f->lens;
	if (lens[0] >= r->min_len[0] && lens[1] >= r->min_len[1] && lens[2] >= r->min_len[2]) {
		f->bit = i;
		return 1;
	}
	return 0;
}

/* The first rule (lowest bit) among `cand` whose prefix-and-suffix fields fit the paths'
 * lengths (lens[3]: without the NUL); -1 if none. */
static __always_inline int first_rule(struct ce_pconfig *cfg, __u32 kind, __u64 cand, __u32 *lens)
{
	struct ce_first f = {.rules = cfg->rules[kind & 1], .cand = cand, .lens = lens, .bit = -1};

	if (cand)
		bpf_loop(CE_PRULES, first_step, &f, 0);
	return f.bit;
}

/* A rule of a kind by its bit, or NULL. */
static __always_inline struct ce_prule *prule_at(struct ce_pconfig *cfg, __u32 kind, int bit)
{
	__u32 i = bit;

	if (bit < 0 || bit >= CE_PRULES)
		return NULL;
	barrier_var(i);
	return &cfg->rules[kind & 1][i & (CE_PRULES - 1)];
}

/* Rules (bits) that name a field at all. */
static __always_inline __u64 naming(struct ce_pconfig *cfg, __u32 field)
{
	return field < CE_FIELDS ? ~(cfg->def_fwd[field] & cfg->def_rev[field]) : 0;
}

/* A process of the host's mount namespace in a container's cgroup: the runtime setting the
 * container up (runc before it has joined the container's namespaces), or one moved in from
 * the host. Containers have mount namespaces of their own; rules are for what runs there. */
static __always_inline int runtime_task(struct ce_pconfig *cfg, struct task_struct *task)
{
	struct nsproxy *ns = task->nsproxy; /* (a trusted task: its pointers are followed directly) */

	return cfg->host_mnt_ns && ns && ns->mnt_ns && ns->mnt_ns->ns.inum == cfg->host_mnt_ns;
}

/* A process's binary (exe), or NULL. */
static __always_inline struct file *exe_of(struct task_struct *task)
{
	struct mm_struct *mm = task ? task->mm : NULL;

	return mm ? mm->exe_file : NULL;
}

/* Narrow `cand` by a process's binary in `field` (resolved into walks[which]); lens[slot]
 * gets its length. Rules naming the field and a process with no binary: no match. */
static __always_inline __u64 by_binary(struct ce_pconfig *cfg, __u64 cand, __u32 field, struct task_struct *task,
				       __u32 which, __u32 *lens, __u32 slot)
{
	__u64 need = naming(cfg, field);
	struct ce_rpath p = {};

	if (!(cand & need))
		return cand;
	struct file *exe = exe_of(task);
	if (!exe || resolve(exe, which, &p) != 0)
		return cand & ~need;
	lens[slot & 3] = p.len - 1;
	return cand & field_mask(cfg, field, &p, (cfg->flags & CE_PC_IDS) ? identity(exe) : NULL, NULL);
}

/* Copy a resolved path into a record's data (at its start); returns the bytes with the NUL. */
static __always_inline __u32 path_out(struct ce_rpath *p, char *data, __u8 *cut)
{
	char *buf = bpf_map_lookup_elem(&walks, &p->which);
	__u32 size = p->len;

	if (!buf)
		return 0;
	if (size > CE_PATH_LEN) {
		*cut = 1;
		size = CE_PATH_LEN;
	}
	if (p->cut)
		*cut = 1;
	barrier_var(size);
	size &= CE_PATH_LEN * 2 - 1;
	if (bpf_probe_read_kernel(data, size, buf + (p->pos & (CE_WALK_LEN - 1))))
		return 0;
	data[(size - 1) & (CE_PATH_LEN - 1)] = 0; /* a cut path still ends */
	return size;
}
