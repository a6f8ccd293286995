"""Python as the hardened unit runs it: systemd's MemoryDenyWriteExecute=yes, here the prctl
the kernel offers for it (PR_SET_MDWE, Linux >= 6.3: no mapping both writable and executable,
none made executable later; set first, it holds for the whole process and cannot be undone)."""

from __future__ import annotations

import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
NO_MDWE_EXIT = 75  # the kernel has no PR_SET_MDWE: the caller fails, naming it

PRELUDE = f"""\
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit({NO_MDWE_EXIT})
"""


def mdwe_python(code: str) -> list[str]:
    """argv running `code` in a fresh interpreter with W^X enforced before anything else."""
    return [sys.executable, "-c", PRELUDE + code]
