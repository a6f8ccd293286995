"""keeperd: a keeper and risk-alerting daemon for leveraged DeFi positions."""

import contextlib as _contextlib
import sys as _sys

with _contextlib.suppress(ImportError):  # (first, for its side effect, undone below)
    import py_ecc as _py_ecc  # noqa: F401 - eth_account's imports bring it anyway
# py_ecc raises Python's recursion limit to 100,000 at its import. The C JSON decoder then
# overflows the thread's stack before it raises RecursionError: one RPC endpoint, venue or
# alert sink answering `[[[[…` 64 kB deep crashed the process with SIGSEGV (an audit; a
# restart loop while it answers so). keeperd's own code recurses nowhere near Python's default.
_sys.setrecursionlimit(1000)

__version__ = "0.1.0"
