"""Build a devnet state of N borrowers from scratch and measure it: wall time and the peak
resident memory of the build's Python process and of its anvil (sampled every second).

    .venv/bin/python bench/devnet_build.py --accounts 100000 \
        --out bench/results/devnet-build-100000.json

The state is built into a temporary directory (the cached one under .devnet/ is neither used
nor touched; the compiler's cache is copied in), then measured — the build, and an anvil
serving the built state — and thrown away, unless --keep or --into-cache.
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
sys.path.insert(0, str(ROOT))
from keeperd.devnet.state import STAGE_BORROWERS  # noqa: E402  (the checkout's, not an install)


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


def _serve(state_json: Path) -> dict[str, float | int]:
    """Start an anvil from the built state, as the scan bench does: how long it takes, what it
    holds, and that every block is there."""
    from keeperd.devnet.anvil import Anvil, rpc_call

    started = time.monotonic()
    node = Anvil(load_state=state_json).start(timeout=900)
    try:
        seconds = time.monotonic() - started
        assert node.process is not None
        head = int(rpc_call(node.rpc_url, "eth_blockNumber"), 16)
        missing = [n for n in range(0, head + 1, max(1, head // 50))
                   if rpc_call(node.rpc_url, "eth_getBlockByNumber", [hex(n), False]) is None]
        if missing:
            raise SystemExit(f"the built state lacks blocks {missing[:5]}...")
        return {"load_seconds": round(seconds, 1),
                "rss_mb_anvil_serving_the_state": round(_rss_mb(node.process.pid), 1),
                "blocks": head + 1}
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the built state's folder")
    parser.add_argument("--into-cache", action="store_true",
                        help="then move the built state into the devnet cache (.devnet/states, "
                             "or KEEPERD_DEVNET_DIR), replacing a cached one: bench/scan.py "
                             "uses it instead of building it again")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from provenance import provenance, settled  # bench/, beside this script

    measured = provenance()  # (before the run: the code it loads)

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
    # (the state's folder: its lock file beside it since the states are built under a lock)
    [folder] = [p for p in (devnet_dir / "states").iterdir() if p.is_dir()]
    state_gz = folder / "state.json.gz"
    loaded = _serve(folder / "state.json")
    result = {
        "what": f"build of a {args.accounts:,}-borrower devnet state from scratch "
                "(keeperd.devnet.state.ensure_state)",
        "accounts": args.accounts,
        "seconds": round(seconds, 1),
        "peak_rss_mb_anvil": round(peaks["anvil"], 1),
        "peak_rss_mb_build_python": round(peaks["python"], 1),
        "peak_rss_mb_together": round(peaks["together"], 1),
        "state_json_gz_mb": round(state_gz.stat().st_size / 2**20, 1),
        "stage_borrowers": STAGE_BORROWERS,
        **loaded,
        "measured_with": "VmRSS of the build's Python process and of its anvil child, "
                         "sampled every second; then of an anvil started from the built state",
        **settled(measured),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    import shutil

    if args.into_cache:
        from keeperd.devnet import paths

        cached = paths.devnet_dir() / "states" / folder.name
        shutil.rmtree(cached, ignore_errors=True)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, cached)
        print(f"cached: {cached}")
    if not args.keep:
        shutil.rmtree(devnet_dir, ignore_errors=True)
    else:
        print(f"kept: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
