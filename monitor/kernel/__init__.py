"""Kernel enforcement: the connect4/connect6 programs in bpfscripts/enforce_connect.bpf.c,
driven through bpftool (loading, attaching, policy maps, counters, the deny event pipe)."""
