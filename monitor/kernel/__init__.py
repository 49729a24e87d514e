"""Kernel observation and enforcement: the connect4/connect6 programs in bpfscripts/enforce_connect.bpf.c,
driven through bpftool (loading, attaching, policy and flow maps, counters, the event pipe)."""
