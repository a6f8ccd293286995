"""`make mutate` (docs/mutation.md): mutmut over keeperd's pure modules, one module at a time,
each mutant against the unit tests that reach the function it changes (pyproject's
[tool.mutmut]); the counts per module, the survivors and the run's provenance are written to
bench/results/mutation.json.

Run by `make mutate` with .venv-mutate's Python (mutmut is not in the test venv)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
OUT = ROOT / "bench" / "results" / "mutation.json"

# The module, and the mutants of it that are mutated: the whole module, except the executor,
# whose one pure function is the decision stage (`decide`); its methods do I/O and are tested
# against anvil, not here.
MODULES = {
    "protocols/aave_v3/liquidation.py": "keeperd.protocols.aave_v3.liquidation.*",
    "protocols/aave_v3/math.py": "keeperd.protocols.aave_v3.math.*",
    "protocols/morpho_blue/math.py": "keeperd.protocols.morpho_blue.math.*",
    "protocols/perp_curie/margin.py": "keeperd.protocols.perp_curie.margin.*",
    "protocols/perps/margin.py": "keeperd.protocols.perps.margin.*",
    "risk/cascade.py": "keeperd.risk.cascade.*",
    "execution/capital.py": "keeperd.execution.capital.*",
    "execution/executor.py:decide": "keeperd.execution.executor.x_decide__mutmut_*",
    "chain/l1_fee.py": "keeperd.chain.l1_fee.*",
    "execution/waves.py": "keeperd.execution.waves.*",
    "execution/wave_code.py": "keeperd.execution.wave_code.*",
    "chain/revert_reason.py": "keeperd.chain.revert_reason.*",
}
# The cascade's kernels come in three variants (aot, numba, numpy: risk/kernels.py) that
# cascade.py drives the same way, and the tests check each against the plain reference: a
# mutant of cascade.py changes what all three are given, so one variant judges it. The numpy
# one, the only one that runs inside mutmut's mutants/ copy without a compiled extension or a
# JIT cache of its own; the tests that take "auto" still run (numba there).
PYTEST_ADDOPTS = {"risk/cascade.py": "-k 'not aot and not numba'"}
# A module's mutants take a few minutes on 2 cores; one stuck this long is a hung run.
MODULE_TIMEOUT_S = 45 * 60
RESULT = re.compile(r"^\s+(\S+): (.+)$")


def statuses() -> dict[str, str]:
    """Every mutant mutmut knows of -> its status (`mutmut results --all`)."""
    out = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return {m[1]: m[2] for line in out.splitlines() if (m := RESULT.match(line))}


def diff(mutant: str, label: str) -> str:
    """The mutated lines of a mutant, as `mutmut show` prints them (without the file header);
    in this process (`mutmut show` starts a Python of its own: ~1.5 s a mutant)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    path = Path("keeperd") / label.split(":")[0]
    out = get_diff_for_mutant(mutant, path=path)
    return "\n".join(ln for ln in out.splitlines()
                     if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def unselected_cases() -> list[str]:
    """The unit files written for the mutation run that pyproject's [tool.mutmut] does not
    select: mutmut would never run them, and their mutants would read "no tests" or survive."""
    mutmut = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    selected = set(mutmut["pytest_add_cli_args_test_selection"])
    return sorted(name for path in (ROOT / "tests" / "unit").glob("test_mut*.py")
                  if (name := str(path.relative_to(ROOT))) not in selected)


def main() -> int:
    os.chdir(ROOT)  # (mutmut reads its configuration and mutants/ from here)
    if missing := unselected_cases():
        print(f"pyproject's [tool.mutmut] does not select {missing}", file=sys.stderr)
        return 2
    only = sys.argv[1:]  # module labels, to run a few; all by default
    if unknown := [a for a in only if a not in MODULES]:
        # (a typo, or --help, ran nothing and still rewrote the file's commit and date)
        print(f"usage: bench/mutation.py [MODULE ...]; not a module: {' '.join(unknown)}; "
              f"the modules: {' '.join(MODULES)}", file=sys.stderr)
        return 2
    children = os.environ.get("MUTATE_CHILDREN", "1")
    report: dict[str, object] = {"tool": "mutmut 3.8.1", **provenance(), "modules": {}}
    # A run of a few modules keeps the others' last figures (each with its own commit, date).
    modules: dict[str, object] = {}
    if only and OUT.exists():
        modules = json.loads(OUT.read_text())["modules"]
    for label, pattern in MODULES.items():
        if only and label not in only:
            continue
        # (each module's own: the tree it copied into mutants/ at its start)
        run = provenance()
        started = time.monotonic()
        # mutmut keeps verdicts and test timings in mutants/ across runs and only re-judges
        # what it thinks changed: each module's verdicts here come from a run from scratch.
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        env = dict(os.environ)
        if label in PYTEST_ADDOPTS:
            env["PYTEST_ADDOPTS"] = PYTEST_ADDOPTS[label]
        subprocess.run([MUTMUT, "run", "--max-children", children, pattern], cwd=ROOT,
                       check=True, timeout=MODULE_TIMEOUT_S, stdout=subprocess.DEVNULL, env=env)
        seconds = round(time.monotonic() - started, 1)
        mine = {k: s for k, s in statuses().items() if fnmatch.fnmatchcase(k, pattern)}
        counts = Counter(mine.values())
        left = sorted(k for k, s in mine.items() if s not in ("killed", "caught by type check"))
        modules[label] = {"commit": run["commit"], "dirty": run["dirty"],
                          "date": run["date"], "children": int(children),
                          **({"pytest_addopts": PYTEST_ADDOPTS[label]}
                             if label in PYTEST_ADDOPTS else {}),
                          "mutants": len(mine), "seconds": seconds, **dict(counts),
                          "not_killed": {k: {"status": mine[k], "diff": diff(k, label)}
                                         for k in left}}
        print(f"{label}: {len(mine)} mutants, {dict(counts)}, {seconds} s", flush=True)
    report["modules"] = modules
    OUT.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
