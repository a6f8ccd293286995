"""Run every benchmark with its default sizes (each prints its figures and writes JSON).

    python bench/run_all.py            # scan at N = 10,000, cascade at 1M x 64, latency at 10,000
    python bench/run_all.py --full     # also the scan at N = 100,000 (builds that devnet once)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.full else [10_000]
    runs = [["scan.py", "--accounts", str(n), "--out", str(HERE / "results" / f"scan-{n}.json")]
            for n in sizes]
    runs.append(["cascade.py", "--positions", "1000000", "--shocks", "64",
                 "--out", str(HERE / "results" / "cascade-1000000.json")])
    runs.append(["latency.py", "--accounts", "10000",
                 "--out", str(HERE / "results" / "latency-10000.json")])
    for script, *args in runs:
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
