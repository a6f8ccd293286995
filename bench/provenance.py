"""Where a benchmark figure comes from: the commit, the anvil version, the machine and the
date, recorded in every result file (figures from different days differ 2-3x on these
shared machines; a figure without its provenance cannot be compared)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def provenance() -> dict[str, Any]:
    anvil = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "package.json"
    return {
        "commit": _git("rev-parse", "HEAD"),
        # (the result files a run writes are not the code it measured)
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                           ":(exclude)bench/results")),
        "anvil": json.loads(anvil.read_text())["version"] if anvil.is_file() else None,
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(),
                    "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def settled(started: dict[str, Any]) -> dict[str, Any]:
    """The provenance a run took at its start (`provenance()` then: the code it loaded), with
    when it ended and whether the tree moved meanwhile (a commit, an edit: `changed_during_
    run`, the figures then belong to neither state with certainty). Taken at the end only, a
    file named the commit made while the run measured the one before."""
    now = provenance()
    return {**started, "ended": now["date"],
            "changed_during_run": (now["commit"], now["dirty"]) != (started["commit"],
                                                                    started["dirty"])}
