"""Where the devnet's inputs (npm packages, our Solidity) and outputs (cache, state) live."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The checkout holding package.json and node_modules.

    KEEPERD_PROJECT_ROOT wins; otherwise the first directory upward from the current one, then
    from the installed package, that has a node_modules folder next to a package.json.
    """
    override = os.environ.get("KEEPERD_PROJECT_ROOT")
    if override:
        return Path(override).resolve()
    for start in (Path.cwd().resolve(), _PACKAGE_DIR):
        for candidate in (start, *start.parents):
            if (candidate / "package.json").is_file() and (candidate / "node_modules").is_dir():
                return candidate
    raise FileNotFoundError(
        "cannot find the keeperd checkout's node_modules (the pinned anvil, Aave V3 artifacts "
        "and solc-js): run `make setup` (npm ci) in the checkout, or set KEEPERD_PROJECT_ROOT")


def node_modules() -> Path:
    return project_root() / "node_modules"


def anvil_binary() -> Path:
    path = node_modules() / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make setup` (npm ci)")
    return path


def aave_artifacts() -> Path:
    return node_modules() / "@aave" / "core-v3" / "artifacts"


def contracts_dir() -> Path:
    return project_root() / "contracts"


def devnet_dir() -> Path:
    """Build outputs and runtime files of the devnet (git-ignored)."""
    path = Path(os.environ.get("KEEPERD_DEVNET_DIR", project_root() / ".devnet"))
    path.mkdir(parents=True, exist_ok=True)
    return path
