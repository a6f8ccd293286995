"""#18: every figure in README.md, docs/ and bench/README.md comes from a result file in
bench/results/ that records the commit, the anvil version, the machine and the date. A page
that names a result file which is not there, or one without its provenance, fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROVENANCE = ("commit", "anvil", "machine", "date")


def test_every_result_file_a_page_names_exists_with_its_provenance() -> None:
    named: dict[str, list[str]] = {}
    for page in PAGES:
        for name in re.findall(r"results/([A-Za-z0-9_.-]+\.json)", page.read_text()):
            named.setdefault(name, []).append(page.relative_to(ROOT).as_posix())
    assert "scan-100000.json" in named and "devnet-build-100000.json" in named
    for name, pages in named.items():
        path = ROOT / "bench" / "results" / name
        assert path.is_file(), f"{pages} name results/{name}, which does not exist"
        result = json.loads(path.read_text())
        missing = [key for key in PROVENANCE if not result.get(key)]
        assert not missing, f"results/{name} (named by {pages}) lacks {missing}"
        assert {"cpus", "cpu_model"} <= set(result["machine"]), name
