"""The local chain: anvil from npm, real Aave V3 from its compiled artifacts, seeded borrowers.

Used by `keeperd devnet`, the tests, the demo and the benchmarks alike.
"""
