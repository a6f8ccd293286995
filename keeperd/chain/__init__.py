"""Talking to chains: the RPC pool, Multicall3 batching, the block source."""
