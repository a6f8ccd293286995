"""#28 item 15: every Python package keeperd runs with comes from a lock pinned by version and
sha256 (requirements/*.lock; `make setup` and the image install with --require-hashes). The
locks must cover pyproject.toml's ranges, agree with each other, and be what this venv runs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s*\\\s*--hash=sha256:[0-9a-f]{64})+)",
                   re.MULTILINE)


def lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{package: (version, its hashes)}; fails on any requirement line that is not pinned by
    `==` with hashes."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    entries = {canonicalize_name(m[1]): (m[2], frozenset(re.findall(r"[0-9a-f]{64}", m[3])))
               for m in ENTRY.finditer(text)}
    assert len(entries) == len(lines), f"{name}.lock has lines not pinned with hashes"
    return entries


def pyproject() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    build = [Requirement(r) for r in (ROOT / "requirements" / "build.in").read_text().splitlines()
             if r and not r.startswith("#")]
    return {"runtime": [Requirement(r) for r in project["dependencies"]] + build,
            "dev": [Requirement(r) for r in project["optional-dependencies"]["dev"]]}


def test_the_locks_pin_what_pyproject_asks_for() -> None:
    runtime, dev = lock("runtime"), lock("dev")
    wanted = pyproject()
    for name, locked in (("runtime", runtime), ("dev", dev)):
        for req in wanted["runtime"] + (wanted["dev"] if name == "dev" else []):
            key = canonicalize_name(req.name)
            assert key in locked, f"{req.name} missing from {name}.lock: run `make lock`"
            assert req.specifier.contains(locked[key][0], prereleases=True), (
                f"{name}.lock pins {req.name}=={locked[key][0]}, outside {req}: `make lock`")


def test_the_runtime_lock_is_the_dev_locks_own_pins() -> None:
    """The image (runtime lock) runs what the tests (dev lock) ran: same versions, same
    files."""
    runtime, dev = lock("runtime"), lock("dev")
    assert {n: runtime[n] for n in runtime} == {n: dev[n] for n in runtime}


def test_this_venv_runs_what_the_lock_pins() -> None:
    drift = {}
    for name, (pinned, _) in lock("dev").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            drift[name] = (pinned, installed)
    assert not drift, f"installed not as locked (pinned, installed): {drift}; `make setup`"


def test_the_image_is_pinned_and_installs_from_the_lock() -> None:
    """#28 item 15: the base image by digest (every stage the same), the packages from the
    runtime lock with --require-hashes, keeperd with nothing resolved."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG BASE=(\S+)$", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2 and set(stages) == {"${BASE}"}, stages
    install = " ".join(dockerfile.split("\\\n"))
    assert re.search(r"pip install [^&]*--require-hashes\s+-r requirements/runtime\.lock",
                     install)
    assert re.search(r"pip install [^&]*--no-deps --no-build-isolation \.", install)
    assert "--upgrade pip" not in install  # (pip too comes from the lock)
    # #31 item 1: the image runs the kernels compiled ahead of time, not numba's JIT: the
    # build stage has a compiler and setup.py and fails if the optional extension was skipped;
    # the final stage has the OpenMP runtime it links against.
    build, final = install.split("\nFROM ${BASE}\n", 1)
    assert re.search(r"^COPY [^\n]*\bsetup\.py\b", build, re.MULTILINE), "setup.py not copied"
    assert re.search(r"apt-get install [^&]*\bgcc\b", build)
    assert "import keeperd.risk._kernels_aot" in build
    assert re.search(r"apt-get install [^&]*\blibgomp1\b", final)
