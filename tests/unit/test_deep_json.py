"""An answer nested deeper than the C stack takes: py_ecc (brought by eth_account) raises
Python's recursion limit to 100,000 at its import, and the C JSON decoder then overflowed the
thread's stack before it could raise RecursionError — one RPC endpoint, venue or alert sink
answering `[[[[…` crashed keeperd with SIGSEGV (an audit). keeperd puts the limit back."""

from __future__ import annotations

import subprocess
import sys


def test_an_answer_nested_too_deep_is_a_bad_answer_not_a_crash() -> None:
    code = (
        "import eth_account, py_ecc, sys\n"
        "from keeperd.chain.rpc import RpcPool\n"
        "assert sys.getrecursionlimit() <= 1000, sys.getrecursionlimit()\n"
        "assert RpcPool._decode(b'[' * 200_000, False) is None\n"
        "assert RpcPool._decode(b'[' * 200_000, True) is None\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode,
                                                                  done.stderr[-500:])
