"""Build a devnet state of N borrowers from scratch and measure it: wall time and the peak
resident memory of the build's Python process and of its anvil (sampled every second).

    .venv/bin/python bench/devnet_build.py --accounts 100000 \
        --out bench/results/devnet-build-100000.json

The state is built into a temporary directory (the cached one under .devnet/ is neither used
nor touched; the compiler's cache is copied in), then measured and thrown away unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the built state's folder")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from provenance import provenance  # bench/, beside this script

    devnet_dir = Path(tempfile.mkdtemp(prefix="keeperd-build-"))
    compiled = ROOT / ".devnet" / "solc"  # (the compiler's cache: measure the build, not solc)
    if compiled.is_dir():
        import shutil

        shutil.copytree(compiled, devnet_dir / "solc")
    env = {**os.environ, "KEEPERD_DEVNET_DIR": str(devnet_dir)}
    started = time.monotonic()
    build = subprocess.Popen(
        [sys.executable, "-c", "from keeperd.devnet.state import ensure_state; "
                               f"ensure_state({args.accounts})"], cwd=ROOT, env=env)
    peaks = {"python": 0.0, "anvil": 0.0, "together": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            py = _rss_mb(build.pid)
            anvil = max((_rss_mb(c) for c in _children(build.pid)), default=0.0)
            peaks["python"] = max(peaks["python"], py)
            peaks["anvil"] = max(peaks["anvil"], anvil)
            peaks["together"] = max(peaks["together"], py + anvil)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = build.wait()
    stop.set()
    sampler.join()
    seconds = time.monotonic() - started
    if code != 0:
        print(f"the build failed (exit {code})", file=sys.stderr)
        return 1
    [folder] = list((devnet_dir / "states").iterdir())
    state_gz = folder / "state.json.gz"
    result = {
        "what": f"build of a {args.accounts:,}-borrower devnet state from scratch "
                "(keeperd.devnet.state.ensure_state)",
        "accounts": args.accounts,
        "seconds": round(seconds, 1),
        "peak_rss_mb_anvil": round(peaks["anvil"], 1),
        "peak_rss_mb_build_python": round(peaks["python"], 1),
        "peak_rss_mb_together": round(peaks["together"], 1),
        "state_json_gz_mb": round(state_gz.stat().st_size / 2**20, 1),
        "measured_with": "VmRSS of the build's Python process and of its anvil child, "
                         "sampled every second",
        **provenance(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(devnet_dir, ignore_errors=True)
    else:
        print(f"kept: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
