"""Which of the cascade's kernel variants the engine runs: the two per-round passes (a round's
liquidations, the final prices' bad and toxic debt), in three builds with one contract and the
same figures (tests/unit/test_cascade.py runs the equality tests against each):

- `aot`: compiled ahead of time by `pip install` (Cython and OpenMP, `_kernels_aot.pyx`), a
  shared library the process maps from a file. It runs where no memory may be both writable
  and executable (systemd's MemoryDenyWriteExecute, as the shipped unit sets), starts with
  nothing to compile, and is the fastest of the three (bench/README.md), so it is the first
  choice everywhere;
- `numba`: JIT-compiled at the first start of an environment (then from numba's cache). Where
  the package was installed without a C compiler; impossible under MemoryDenyWriteExecute;
- `numpy`: nothing compiled, several times slower: the last resort.

`kernels()` chooses once per process and logs the choice once (`cascade.kernels`), with a
warning for each faster variant it could not use and why (`cascade.aot_unavailable`,
`cascade.jit_unavailable`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VARIANTS = ("aot", "numba", "numpy")  # in the order `kernels()` tries them


class KernelUnavailable(RuntimeError):
    """A kernel variant cannot run in this process; `fix` says what would make it run."""

    def __init__(self, variant: str, reason: str, fix: str) -> None:
        super().__init__(f"{variant} cascade kernels unavailable: {reason} ({fix})")
        self.variant, self.reason, self.fix = variant, reason, fix


@dataclass(frozen=True)
class Kernels:
    """One variant's passes (signatures: `kernels_numba.round_pass` and `final_pass`) and how
    to set the threads they use."""

    variant: str
    round_pass: Callable[..., Any]
    final_pass: Callable[..., Any]
    set_threads: Callable[[int], None]


_FIXES = {
    "aot": "reinstall keeperd where a C compiler (gcc) and Python's headers are present: "
           "`pip install --no-deps --no-build-isolation .` builds keeperd/risk/_kernels_aot",
    "numba": "allow executable memory for keeperd (drop MemoryDenyWriteExecute), or build the "
             "ahead-of-time kernels, which need no executable memory",
}


def load(variant: str) -> Kernels:
    """The variant's kernels, ready to run, or KernelUnavailable."""
    if variant not in VARIANTS:
        raise ValueError(f"cascade kernels: unknown variant {variant!r}; one of {VARIANTS}")
    module_name = {"aot": "keeperd.risk._kernels_aot", "numba": "keeperd.risk.kernels_numba",
                   "numpy": "keeperd.risk.kernels_numpy"}[variant]
    try:
        module: Any = importlib.import_module(module_name)
        if variant == "numba":
            module.warm_up()  # compiles, or loads numba's cache: seconds the first time
    except ImportError as exc:  # the extension was not built (no compiler at install time)
        raise KernelUnavailable(variant, str(exc), _FIXES[variant]) from exc
    except OSError as exc:  # numba: "cannot allocate executable memory" (W^X enforced)
        raise KernelUnavailable(variant, str(exc), _FIXES[variant]) from exc
    set_threads = module.set_num_threads if variant == "aot" else module.set_threads
    return Kernels(variant, module.round_pass, module.final_pass, set_threads)


_chosen: Kernels | None = None
_choosing = threading.Lock()  # the daemon's start and a first cascade may ask at once


def kernels(prefer: str = "auto") -> Kernels:
    """`prefer`: a variant by name (KernelUnavailable if it cannot run here), or "auto": the
    first of VARIANTS that runs, chosen once per process and logged."""
    if prefer != "auto":
        return load(prefer)
    global _chosen
    with _choosing:
        if _chosen is None:
            _chosen = _choose()
        return _chosen


def _choose() -> Kernels:
    import structlog

    log = structlog.get_logger(__name__)
    for variant in VARIANTS:
        try:
            chosen = load(variant)
        except KernelUnavailable as exc:
            event = "cascade.aot_unavailable" if variant == "aot" else "cascade.jit_unavailable"
            log.warning(event, error=exc.reason, fix=exc.fix,
                        fallback="the next variant: the same figures, slower")
            continue
        log.info("cascade.kernels", variant=chosen.variant)
        return chosen
    raise AssertionError("the numpy kernels always load")
