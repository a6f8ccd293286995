"""Aave V3 (and forks with the V3.0 ABI): discovery, batched reads, exact and fast health."""
