"""Run every benchmark with its default sizes and print where the JSON went.

    python bench/run_all.py            # N = 10,000
    python bench/run_all.py --full     # also N = 100,000 (builds a 100k-borrower devnet once)
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
    for n in sizes:
        out = HERE / "results" / f"scan-{n}.json"
        code = subprocess.call([sys.executable, str(HERE / "scan.py"), "--accounts", str(n),
                                "--out", str(out)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
