// SPDX-License-Identifier: GPL-2.0
/* The smallest XDP program: passes every packet. bench/xdp.py's third arm, to tell what any
 * XDP program costs on a device from what the blocklist's lookup costs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
