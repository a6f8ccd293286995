"""Fetch the npm packages that `npm ci` cannot install (their dependency lists name GitHub
tarballs) with `npm pack`, check each against the integrity pinned in `npm-packs.json`, and
unpack it under `vendor/npm/<name>/`. Run by `make setup`; idempotent.

    python -m keeperd.devnet.npm_packs [--root DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def vendor_dir(root: Path) -> Path:
    return root / "vendor" / "npm"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def install(root: Path) -> list[Path]:
    spec = json.loads((root / "npm-packs.json").read_text())
    out = []
    for package in spec["packages"]:
        name, version, integrity = package["name"], package["version"], package["integrity"]
        target = vendor_dir(root) / name
        stamp = target / ".integrity"
        if stamp.is_file() and stamp.read_text() == integrity:
            out.append(target)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", tmp,
                            "--silent"], check=True, stdout=subprocess.DEVNULL)
            [tgz] = Path(tmp).glob("*.tgz")
            got = _integrity(tgz)
            if got != integrity:
                raise SystemExit(f"{name}@{version}: integrity {got} is not the pinned "
                                 f"{integrity} (npm-packs.json)")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(tgz) as archive:
                archive.extractall(tmp, filter="data")
            for item in (Path(tmp) / "package").iterdir():
                shutil.move(str(item), target / item.name)
        stamp.write_text(integrity)
        print(f"vendored {name}@{version} into {target}")
        out.append(target)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    install(parser.parse_args().root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
