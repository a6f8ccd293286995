"""#18, #30 item 5: every figure in README.md, docs/ and bench/README.md comes from a result
file in bench/results/ that records the commit, whether the tree differed from it, the anvil
version, the machine and the date (`bench/provenance.py` writes them). A page that names a
result file which is not there, or one without its provenance, fails; so does any figure in a
bench/README table that differs from its file (to the digits shown)."""

from __future__ import annotations

import datetime
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
BENCH = ROOT / "bench" / "README.md"
PAGES = [ROOT / "README.md", BENCH, *sorted((ROOT / "docs").glob("*.md"))]

# A reference: `results/<name>.json`, where the name may hold brace alternatives
# (`results/scan-10000-{v3.6,v3.0}.json`); any other `results/` followed by a name is one the
# parser missed, and fails below rather than escaping the check.
REFERENCE = re.compile(r"results/([A-Za-z0-9_.,{}-]+?\.json)")
ANY_RESULTS_NAME = re.compile(r"results/(?=[^`\s)])")


def expand(name: str) -> list[str]:
    """`a-{x,y}-{1,2}.json` -> its four names (braces as the shell reads them)."""
    match = re.search(r"\{([^{}]*)\}", name)
    if match is None:
        return [name]
    return [full for alt in match.group(1).split(",")
            for full in expand(name[:match.start()] + alt + name[match.end():])]


def sections(text: str) -> list[str]:
    """A page cut at its headings: a file's explanation is looked for in its own section."""
    return re.split(r"(?m)^#{1,4} ", text)


def named() -> dict[str, list[tuple[str, str]]]:
    """Each result file a page names -> (page, the section that names it)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in PAGES:
        text = page.read_text()
        assert len(ANY_RESULTS_NAME.findall(text)) == len(REFERENCE.findall(text)), \
            f"{page.name}: a `results/` reference this test cannot read"
        for section in sections(text):
            for reference in REFERENCE.findall(section):
                for name in expand(reference):
                    found.setdefault(name, []).append(
                        (page.relative_to(ROOT).as_posix(), section))
    return found


def provenance_problems(result: dict[str, Any]) -> list[str]:
    """What `bench/provenance.py` writes, checked as written (a hand-edited record — a short
    commit, a date without its time, a null anvil — is not one)."""
    problems = []
    if not re.fullmatch(r"[0-9a-f]{40}", str(result.get("commit"))):
        problems.append(f"commit {result.get('commit')!r} is not a full hash")
    if not isinstance(result.get("dirty"), bool):
        problems.append(f"dirty {result.get('dirty')!r} is not true or false")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(result.get("anvil"))):
        problems.append(f"anvil {result.get('anvil')!r} is not a version")
    try:
        date = datetime.datetime.fromisoformat(str(result.get("date")))
        if date.tzinfo is None or "T" not in str(result.get("date")):
            problems.append(f"date {result.get('date')!r} has no time and zone")
    except ValueError:
        problems.append(f"date {result.get('date')!r} is not ISO 8601")
    if result.get("changed_during_run") is True:  # (files from before it was kept lack it)
        problems.append("the tree moved during the run (a commit or an edit): its figures "
                        "belong to neither state")
    machine = result.get("machine") or {}
    if not (isinstance(machine.get("cpus"), int) and machine.get("cpu_model")
            and re.fullmatch(r"\d+\.\d+\.\d+", str(machine.get("python")))):
        problems.append(f"machine {machine!r} lacks cpus, cpu_model or python")
    return problems


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / name).read_text())
    return result


def test_brace_references_expand_to_every_name() -> None:
    assert expand("results/x-{a,b}.json") == ["results/x-a.json", "results/x-b.json"]
    assert expand("s-{1,2}-{v,w}.json") == ["s-1-v.json", "s-1-w.json", "s-2-v.json",
                                            "s-2-w.json"]
    assert {"scan-10000-v3.0.json", "latency-10000-v3.6.json"} <= set(named())


def test_every_result_file_a_page_names_exists_with_its_provenance() -> None:
    references = named()
    assert "scan-100000.json" in references and "devnet-build-100000.json" in references
    for name, where in references.items():
        pages = sorted({page for page, _ in where})
        assert (RESULTS / name).is_file(), f"{pages} name results/{name}, which does not exist"
        result = load(name)
        problems = provenance_problems(result)
        assert not problems, f"results/{name} (named by {pages}): {problems}"
        if result["dirty"]:  # measured from a tree that differed from its commit: say why
            assert any("dirty" in section for _, section in where), \
                f"results/{name} says dirty, and no section naming it says why"


def test_every_result_file_is_named_by_a_page() -> None:
    """A file no page names is a figure no one checks: named, or removed."""
    orphans = sorted(p.name for p in RESULTS.glob("*.json")) - named().keys()
    assert not orphans, orphans


# --- each figure of each bench/README table against its file ------------------------------

Figures = Callable[[list[dict[str, Any]]], list[float]]
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Table:
    """How one table's rows find their result files, and what each column's figures are."""

    rows: dict[str, list[str]]  # how a row starts -> the result files of that row
    columns: dict[str, Figures | None]  # None: a column without figures (a commit, a label)
    row_columns: dict[str, dict[str, Figures | None]] = field(default_factory=dict)

    def figures_of(self, row: str) -> dict[str, Figures | None]:
        return self.row_columns.get(row, self.columns)


def gb(mb: float) -> float:
    return mb / 1000


def minutes_seconds(seconds: float) -> list[float]:
    return [seconds // 60, seconds % 60]


def cascade(book: str, variant: str) -> Figures:
    return lambda f: [f[0]["books"][book][variant]["seconds"],
                      f[0]["books"][book][variant]["reference_speedup"]]


SCAN: dict[str, Figures | None] = {
    "N": lambda f: [f[0]["accounts"]],
    "code, measured at": None,
    "keeperd": lambda f: [f[0]["keeperd"]["seconds"]],
    "keeperd acc/s": lambda f: [f[0]["keeperd"]["accounts_per_s"]],
    "requests": lambda f: [f[0]["keeperd"]["rpc_requests"],
                           f[0]["accounts"] / f[0]["keeperd"]["rpc_requests"]],
    "peak RSS": lambda f: [f[0]["keeperd"]["peak_rss_mb"]],
    "baseline acc/s (same run)": lambda f: [f[0]["baseline"]["accounts_per_s"]],
    "**speed-up**": lambda f: [f[0]["speedup_accounts_per_s"]],
    "every account cross-checked": lambda f: [
        f[0]["keeperd_every_account_cross_checked"]["accounts_per_s"]],
    # (files before the scan reader did not measure it: the page shows no figure)
    "through aggregate3": lambda f: [
        f[0]["keeperd_through_aggregate3"]["accounts_per_s"],
        f[0]["keeperd_through_aggregate3"]["accounts_per_s"] / f[0]["baseline"]["accounts_per_s"],
    ] if "keeperd_through_aggregate3" in f[0] else [],
    "reprice": lambda f: [f[0]["reprice_ms"]],
}


def scan_time(side: str) -> dict[str, Figures | None]:
    """Where a scan's time went (bench/scan.py records it since the scan reader)."""
    return {
        "N, read through": None,
        "scan": lambda f: [f[0][side]["seconds"]],
        "reading": lambda f: [f[0][side]["read_seconds"]],
        "exact math": lambda f: [f[0][side]["exact_math_seconds"]],
        "keeperd CPU": lambda f: [f[0][side]["keeperd_cpu_seconds"]],
        "node CPU": lambda f: [f[0][side]["node_cpu_seconds"]],
        "requests": lambda f: [f[0][side]["rpc_requests"]],
    }


def scan_rows(n: str, name: str) -> dict[str, list[str]]:
    """A scan table's rows of one N: this branch's file, the same code measured earlier in
    the session, the session's start, the figures of 2026-11-28."""
    rows = {f"{n} | this": [f"{name}.json"],
            f"{n} | `2e604d4`": [f"{name}-2e604d4.json"],
            f"{n} | `3dc7ab0`": [f"{name}-3dc7ab0.json"],
            f"{n} | `5aa768a`": [f"{name}-5aa768a.json"]}
    if name == "scan-10000":
        rows[f"{n} | `15e494e`"] = [f"{name}-15e494e.json"]
        rows[f"{n} | `10267b2`"] = [f"{name}-10267b2.json"]
    else:
        rows[f"{n} | `6da1993`"] = [f"{name}-6da1993.json"]
    return rows
LATENCY: dict[str, Figures | None] = {
    "code": None,
    "WETH step": lambda f: [f[0]["price_step"] * 100, f[0]["rounds"]],
    "liquidations (per round)": lambda f: [f[0]["liquidations_sent"],
                                           f[0]["mean_liquidations_per_round"]],
    "p50": lambda f: [f[0]["p50_ms"]],
    "p99": lambda f: [f[0]["p99_ms"]],
    "first of each round p50 / p99": lambda f: [f[0]["first_per_round_p50_ms"],
                                                f[0]["first_per_round_p99_ms"]],
}
# Run F (bench/README.md, "fourth pass"): each commit's runs without delay and at +50 ms.
RUN_F = (("50f7552", " (c20f5d3 + bench)", {"none": range(1, 12), "+50": range(1, 5)}),
         ("e7814c5", "", {"none": range(1, 4), "+50": range(1, 3)}),
         ("31b6062", "", {"none": range(4, 6), "+50": range(3, 5)}),
         ("5108123", "", {"none": range(6, 12), "+50": range(5, 7)}))
# Run G (bench/README.md, "fifth pass"): pairs of one session, each against main of its hour.
RUN_G = (("c251580", " (main)", {"none": range(1, 4)}),
         ("6243928", " (signed ahead, not kept)", {"none": range(1, 4)}),
         ("d0efa26", " (main)", {"none": range(1, 7), "+50": range(1, 3)}),
         ("b542e8e", " (first wave encoded first, not kept)",
          {"none": range(1, 4), "+50": range(1, 3)}),
         ("797cf63", " (a wave journaled in one write)", {"none": range(1, 4)}))
LATENCY_ROUND_TRIPS: dict[str, Figures | None] = {
    "code": None,
    "delay per request": lambda f: [] if f[0].get("delay_ms") is None else [f[0]["delay_ms"]],
    "liquidations (per round)": LATENCY["liquidations (per round)"],
    "p50": LATENCY["p50"],
    "p99": LATENCY["p99"],
    "first of each round p50 / p99": LATENCY["first of each round p50 / p99"],
    "p99 / first p50": lambda f: [f[0]["p99_ms"] / f[0]["first_per_round_p50_ms"]],
    "round trips to the first send, max / median": lambda f: (
        [] if f[0].get("round_trips_max") is None else [
            f[0]["round_trips_max"], statistics.median(
                t for t in f[0]["round_trips_head_to_first_send"] if t is not None)]),
}
# Run I (bench/README.md, "sixth pass"): the node's serial share of each round beside it.
LATENCY_NODE_SERIAL: dict[str, Figures | None] = {
    **{k: v for k, v in LATENCY_ROUND_TRIPS.items() if not k.startswith("round trips")},
    "the node's serial work: p99 / over the first's p50": lambda f: (
        [] if f[0].get("p99_node_serial_ms") is None
        else [f[0]["p99_node_serial_ms"], f[0]["tail_over_first_node_serial"]]),
    "round trips to the first send, max / median":
        LATENCY_ROUND_TRIPS["round trips to the first send, max / median"],
}
BUILD: dict[str, Figures | None] = {
    "commit": None,
    "how": lambda f: [f[0]["stage_borrowers"]] if "stage_borrowers" in f[0] else [],
    "anvil peak": lambda f: [gb(f[0].get("peak_rss_mb_anvil")
                                or f[0]["peak_rss_mb_anvil_sampled"])],
    "build's Python": lambda f: [gb(f[0].get("peak_rss_mb_build_python")
                                    or f[0]["peak_rss_mb_build_python_sampled"])],
    "time": lambda f: minutes_seconds(f[0]["seconds"]),
}

def cascade_columns(book: str) -> dict[str, Figures | None]:
    return {
        "book (1,000,000 x 64)": None,
        "rounds mean / max": lambda f: [f[0]["books"][book]["rounds_mean"],
                                        f[0]["books"][book]["rounds_max"]],
        "pairs liquidated": lambda f: [f[0]["books"][book]["liquidated_pairs_share"] * 100],
        "numba, 1 thread": cascade(book, "numba_1_thread"),
        "numba, 2 cores": cascade(book, "numba_all_cores"),
        "numpy": cascade(book, "numpy"),
    }


def hardened_cascade_columns(book: str) -> dict[str, Figures | None]:
    """The table with the hardened unit's kernels (under PR_SET_MDWE) beside numba's."""
    return {**cascade_columns(book),
            "hardened (aot), 1 thread": cascade(book, "hardened_1_thread"),
            "hardened (aot), 2 cores": cascade(book, "hardened_all_cores")}


def isolation(protocol: str) -> dict[str, Figures | None]:
    def of(key: str) -> Figures:
        return lambda f: [f[0]["protocols"][protocol][key]]
    return {"code": None, "protocol": None, "alone": of("alone_median_ms"),
            "with Aave, Morpho, Curie": of("all_median_ms"),
            "all / alone": of("ratio_all_over_alone")}


ISOLATION_ROWS = {**{f"`9bec96f` (main, {kind}), 11 rounds, run L{i}":
                     f"isolation-9bec96f-r11-{file}-l{i}.json" for i in (1, 2)
                     for kind, file in (("references", "refs"), ("no references", "norefs"))},
                  "`8d931db` (references, read on Morpho's path), 11 rounds, run M0":
                      "isolation-8d931db-refs-r11.json",
                  **{f"`8d931db` (references, read on Morpho's path), Morpho only, 11 rounds, "
                     f"run M{i}": f"isolation-8d931db-refs-morpho-r11-{i}.json" for i in (1, 2)},
                  ("`f9a6e90` with the header oracle (not kept), references, Morpho only, "
                   "11 rounds, run M1"): "isolation-header-oracle-refs-morpho-r11.json",
                  **{f"`f9a6e90` with the header oracle (not kept), no references, Morpho "
                     f"only, 11 rounds, run N{i}": f"isolation-header-oracle-r11-{i}.json"
                     for i in (1, 2)},
                  **{f"`f9a6e90` (a batch per path, not kept), no references, Morpho only, "
                     f"11 rounds, run N{i}": f"isolation-prefetch-groups3-r11-{i + 2}.json"
                     for i in (1, 2)},
                  **{f"`81bd9c7` (main), 21 rounds, run J{i}": f"isolation-81bd9c7-r21-j{i}.json"
                     for i in (1, 2, 3, 4, 5, 6)},
                  **{f"`ea6fd86` (light reads in a batch of their own, not kept), 21 rounds, "
                     f"run J{i}": f"isolation-ea6fd86-r21-j{i}.json" for i in (5, 6)},
                  **{f"`26da2ca` (a head batch per path, not kept), 21 rounds, run J{i}":
                     f"isolation-26da2ca-r21-j{i}.json" for i in (3, 4)},
                  ("`f6caf2e` (a path under water first, the USD feeds judged during the read), "
                   "9 rounds, run H4"):
                      "isolation-f6caf2e-watch-h4.json",
                  ("`f6caf2e` (a path under water first, the USD feeds judged during the read), "
                   "9 rounds, run H5"):
                      "isolation-f6caf2e-watch-h5.json",
                  "`47dcc5d` (a path under water first), 9 rounds, run H1":
                      "isolation-47dcc5d-outlook-h1.json",
                  "`47dcc5d` (a path under water first), 9 rounds, run H2":
                      "isolation-47dcc5d-outlook-h2.json",
                  "`47dcc5d` (a path under water first), 9 rounds, run H3":
                      "isolation-47dcc5d-outlook-h3.json",
                  "`21f1e8c` (before, main), 9 rounds, run H2":
                      "isolation-21f1e8c-warm9-h2.json",
                  "`21f1e8c` (before, main), 9 rounds, run H3":
                      "isolation-21f1e8c-warm9-h3.json",
                  "`fc4d242` (rule 2 with a margin, reverted), 9 rounds, run G5":
                      "isolation-fc4d242-warm9-g5.json",
                  "`fc4d242` (rule 2 with a margin, reverted), 9 rounds, run G7":
                      "isolation-fc4d242-warm9-g7.json",
                  "`cf117a0`, 9 rounds, run G6": "isolation-cf117a0-warm9-g6.json",
                  "`cf117a0`, 9 rounds, run G4": "isolation-cf117a0-warm9-g4.json",
                  "`d6f7abd` (lighter paths started first, not kept), 9 rounds, run G3":
                      "isolation-d6f7abd-warm9-g3.json",
                  "`d0efa26`, 9 rounds, run G3": "isolation-d0efa26-warm9-g3.json",
                  "`d0efa26`, 9 rounds, run G4": "isolation-d0efa26-warm9-g4.json",
                  "`d0efa26`, run G1": "isolation-d0efa26-warm-g1.json",
                  "`d0efa26`, run G2": "isolation-d0efa26-warm-g2.json",
                  "`69c212e`, run G1": "isolation-69c212e-warm-g1.json",
                  "`69c212e`, run G2": "isolation-69c212e-warm-g2.json",
                  "`1875f22` (prefetch keys)": "isolation-1875f22-stages-warm.json",
                  "`69c212e` (stages timed)": "isolation-69c212e-stages-warm.json",
                  "`d2fd43f` (stages timed, first)": "isolation-d2fd43f-stages-warm.json",
                  "`049f0c5` (a batch per protocol), warmed":
                      "isolation-049f0c5-warm-clean.json",
                  "`31b6062` (before, main), warmed, clean": "isolation-31b6062-warm-clean.json",
                  "`89e4199` (code of 049f0c5), warmed, dirty": "isolation-89e4199-warm.json",
                  "`31b6062` (before, main), warmed, dirty": "isolation-31b6062-warm.json",
                  "`8bc977d`, warmed": "isolation-8bc977d-warm.json",
                  "`f1975c0` (this, code of 8bc977d), warmed, a second run":
                      "isolation-f1975c0-warm.json",
                  "`914df2b` (rules of 834701a), warmed": "isolation-914df2b-warm.json",
                  "`617b740` (before, main), warmed": "isolation-617b740-warm.json",
                  "`684e6f3` (rules of 834701a)": "isolation-684e6f3.json",
                  "`684e6f3` (rules of 834701a), a second run":
                      "isolation-684e6f3-second.json",
                  "`a7065c3` (rules of 8bc977d)": "isolation-a7065c3.json",
                  "`617b740` (before, main)": "isolation-617b740.json",
                  "`91d45d1` (second pass)": "isolation.json",
                  "`26e1ce0` (before, main)": "isolation-before-26e1ce0.json",
                  "`83dfee9`, its own run": "isolation-83dfee9.json",
                  "`2cfe953` (before), this bench": "isolation-baseline-2cfe953-final-bench.json",
                  "`2cfe953` (before), first bench": "isolation-baseline-2cfe953.json"}


WAVE_RUNS = {"K1": "wave-tx-10000-7b06335.json", "K2": "wave-tx-10000-763c694-k2.json"}


def wave_columns(way: str) -> dict[str, Figures | None]:
    """bench/wave_tx.py: one way of sending a round's liquidations (`each`, `wave`)."""
    return {
        "way": None,
        "the node: simulate / accept a liquidation": lambda f: [
            f[0]["ways"][way]["simulate_ms_per_liquidation"],
            f[0]["ways"][way]["send_ms_per_liquidation"]],
        "gas a liquidation": lambda f: [f[0]["ways"][way]["gas_per_liquidation"]],
        "the node's serial work: p99 / over the first's p50": lambda f: [
            f[0]["ways"][way]["p99_node_serial_ms"],
            f[0]["ways"][way]["tail_over_first_node_serial"]],
    }


# The eighth pass (bench/README.md): one transaction each beside waves, in the same minutes.
WAVE_LATENCY_ROWS = {
    "`f5bd0fc`, run W1.2 | one transaction each": ["latency-10000-w1-f5bd0fc-single-2.json"],
    **{f"`f5bd0fc`, run W1.{i} | several waves in flight (not kept)":
       [f"latency-10000-w1-f5bd0fc-waves-{i}.json"] for i in (1, 2)},
    **{f"`b2f61d9`, run W4.{i} | {way}": [f"latency-10000-w4-b2f61d9-{name}-{i}.json"]
       for i in (1, 2) for way, name in (("one transaction each", "single"),
                                         ("one wave a block", "waves"))},
    "`f8d5520`, run W3 | one transaction each | +50":
        ["latency-10000-delay50-w3-f8d5520-single.json"],
    "`b2f61d9`, run W4 | one wave a block | +50": ["latency-10000-delay50-w4-b2f61d9-waves.json"],
}

TABLES: dict[tuple[str, ...], Table] = {
    ("code", "protocol", "alone", "with Aave, Morpho, Curie", "all / alone"): Table(
        {f"{code} | {name}": [file] for code, file in ISOLATION_ROWS.items()
         for name in ("Aave", "Morpho")}, {},
        {f"{code} | {name}": isolation(protocol) for code in ISOLATION_ROWS
         for name, protocol in (("Aave", "aave"), ("Morpho", "morpho"))}),
    tuple(SCAN): Table({**scan_rows("10,000", "scan-10000"),
                        **scan_rows("100,000", "scan-100000")}, SCAN),
    tuple(scan_time("keeperd")): Table({
        "10,000, scan reader": ["scan-10000.json"], "10,000, aggregate3": ["scan-10000.json"],
        "100,000, scan reader": ["scan-100000.json"],
        "100,000, aggregate3": ["scan-100000.json"]}, {}, {
        "10,000, scan reader": scan_time("keeperd"),
        "10,000, aggregate3": scan_time("keeperd_through_aggregate3"),
        "100,000, scan reader": scan_time("keeperd"),
        "100,000, aggregate3": scan_time("keeperd_through_aggregate3")}),
    tuple(BUILD): Table({
        "before `29cf963`": ["devnet-build-100000-29cf963.json"],
        "`29cf963`": ["devnet-build-100000-29cf963.json"],
        "`b644040`": ["devnet-build-100000-b644040.json"],
        "`6da1993`": ["devnet-build-100000.json"],
    }, BUILD, {"before `29cf963`": {  # (what that file records of the build before it)
        "commit": None, "how": lambda f: [], "build's Python": lambda f: [], "time": lambda f: [],
        "anvil peak": lambda f: [float(re.search(r"(\d+) GB", f[0]["before"])[1])]}}),
    tuple(LATENCY): Table({
        "`10267b2` (this) | 1 % x 30": ["latency-10000.json"],
        "`10267b2` (this) | 0.2 % x 30": ["latency-10000-step0.2pct.json"],
        "`2843102` | 1 % x 30": ["latency-10000-2843102.json"],
    }, LATENCY),
    tuple(LATENCY_ROUND_TRIPS): Table({
        "`8b09efd` (main), run A | none": ["latency-10000-8b09efd-ab.json"],
        "`51b6400`, run A | none": ["latency-10000-51b6400.json"],
        "`8b09efd` (main), run B | none": ["latency-10000-8b09efd-ab2.json"],
        "`ed7ef63`, run B | none": ["latency-10000-ed7ef63.json"],
        "`8b09efd` (main), run A | +50": ["latency-10000-delay50-8b09efd.json"],
        "`51b6400`, run A | +50": ["latency-10000-delay50-51b6400.json"],
        "`ed7ef63`, run B | +50": ["latency-10000-delay50-ed7ef63.json"],
        "`8b09efd` (main), run C | none": ["latency-10000-8b09efd-ab3.json"],
        "`e1feead`, run C | none": ["latency-10000-e1feead.json"],
        "`e1feead`, run C | +50": ["latency-10000-delay50-e1feead.json"],
        "`ba47dfb` (main merged), run D | none": ["latency-10000-ba47dfb.json"],
        "`ba47dfb` (main merged), run D | +50": ["latency-10000-delay50-ba47dfb.json"],
        **{f"`{code}`{' (main)' if code == '80c7e36' else ''}, run E{i} | none":
           [f"latency-10000-ab-{code}-{i}.json"]
           for code in ("80c7e36", "f5830e3") for i in (1, 2, 3)},
        **{f"`{code}`{' (main)' if code == '80c7e36' else ''}, run E{i} | +50":
           [f"latency-10000-delay50-ab-{code}-{i}.json"]
           for code in ("80c7e36", "f5830e3") for i in (1, 2)},
        **{f"`{code}`{label}, run F{i} | {delay}":
           [f"latency-10000-{'delay50-' if delay == '+50' else ''}ab4-{code}-{i}.json"]
           for code, label, runs in RUN_F for delay in ("none", "+50")
           for i in runs[delay]},
        **{f"`{code}`{label}, run G{i} | {delay}":
           [f"latency-10000-{'delay50-' if delay == '+50' else ''}ab5-{code}-{i}.json"]
           for code, label, runs in RUN_G for delay in ("none", "+50")
           for i in runs.get(delay, ())},
        "`1875f22`, run G0 | +50": ["latency-10000-delay50-1875f22-1.json"],
    }, LATENCY_ROUND_TRIPS),
    tuple(LATENCY_NODE_SERIAL): Table({
        **{f"`{code}`{label}, run I{i} | {delay}":
           [f"latency-10000-{'delay50-' if delay == '+50' else ''}ab6-{code}-{i}.json"]
           for code, label in (("4baf8a5", " (main)"), ("81bd9c7", ""))
           for delay, runs in (("none", (1, 2, 3, 4)), ("+50", (1, 2))) for i in runs},
        # (session 31: main at its start, and its end beside it)
        **{f"`81ca2a5` (main at the start), run S{i} | none":
           [f"latency-10000-s31-81ca2a5-{i}.json"] for i in (1, 2, 3)},
        **{f"`1456e16` (the session's end), run S{i} | none":
           [f"latency-10000-s31-1456e16-{i - 1}.json"] for i in (2, 3)},
        # (session 35: its end beside session 34's start)
        **{f"`{code}`{label}, run T{i} | none": [f"latency-10000-s35-{code}-{i}.json"]
           for code, label in (("d007d7d", " (session 34's start)"),
                               ("55304ce", " (this session's end)")) for i in (1, 2)},
        # (session 36: its end, once each way)
        "`596bdf2` (session 36), run V1 | none": ["latency-10000-s36-596bdf2.json"],
        "`596bdf2` (session 36), run V1 | +50": ["latency-10000-delay50-s36-596bdf2.json"],
    }, LATENCY_NODE_SERIAL),
    # (session 36: the scan measured again at its end)
    ("N", "code", "keeperd", "requests", "baseline acc/s (same run)", "**speed-up**",
     "every account cross-checked", "health mismatches"): Table({
        "10,000 | `596bdf2`": ["scan-10000-s36-596bdf2.json"],
        "100,000 | `596bdf2`": ["scan-100000-s36-596bdf2.json"],
    }, {"N": SCAN["N"], "code": None, "keeperd": SCAN["keeperd"],
        "requests": SCAN["requests"],
        "baseline acc/s (same run)": SCAN["baseline acc/s (same run)"],
        "**speed-up**": SCAN["**speed-up**"],
        "every account cross-checked": SCAN["every account cross-checked"],
        "health mismatches": lambda f: [f[0]["keeperd"]["health_mismatches_vs_chain"]]}),
    ("way", "the node: simulate / accept a liquidation", "gas a liquidation",
     "the node's serial work: p99 / over the first's p50"): Table({
        f"{label}, run {run}": [file]
        for run, file in WAVE_RUNS.items()
        for label in ("one transaction per liquidation (keeperd)",
                      "one transaction per wave of 16 (not built)")}, {}, {
        f"{label}, run {run}": wave_columns(way) for run in WAVE_RUNS
        for label, way in (("one transaction per liquidation (keeperd)", "each"),
                           ("one transaction per wave of 16 (not built)", "wave"))}),
    ("code", "way", *list(LATENCY_ROUND_TRIPS)[1:]): Table(WAVE_LATENCY_ROWS, {
        "code": None, "way": None,
        **{k: v for k, v in LATENCY_ROUND_TRIPS.items() if k != "code"}}),
    ("code, devnet", "scan 10k", "requests", "peak RSS", "speed-up vs baseline",
     "latency p50 / p99", "first of a round p50 / p99"): Table({
        "`3d774d5`, v3.0": ["scan-10000-v3.0.json", "latency-10000-v3.0.json"],
        "`3d774d5`, v3.6": ["scan-10000-v3.6.json", "latency-10000-v3.6.json"],
    }, {
        "code, devnet": None,
        "scan 10k": lambda f: [f[0]["keeperd"]["seconds"]],
        "requests": lambda f: [f[0]["keeperd"]["rpc_requests"]],
        "peak RSS": lambda f: [f[0]["keeperd"]["peak_rss_mb"]],
        "speed-up vs baseline": lambda f: [f[0]["speedup_accounts_per_s"]],
        "latency p50 / p99": lambda f: [f[1]["p50_ms"], f[1]["p99_ms"]],
        "first of a round p50 / p99": lambda f: [f[1]["first_per_round_p50_ms"],
                                                 f[1]["first_per_round_p99_ms"]],
    }),
    ("book (1,000,000 x 64)", "rounds mean / max", "pairs liquidated",
     "hardened (aot), 1 thread", "hardened (aot), 2 cores", "numba, 1 thread", "numba, 2 cores",
     "numpy"): Table(
        {"typical": ["cascade-1000000.json"], "stressed": ["cascade-1000000.json"]}, {},
        {"typical": hardened_cascade_columns("typical"),
         "stressed": hardened_cascade_columns("stressed")}),
    # (session 36: the hardened kernels measured again, two runs)
    ("book, run", "reference (2,000 positions)", "hardened (aot), 1 thread",
     "hardened (aot), 2 cores", "numba, 1 thread", "numpy"): Table(
        {f"{book}, U{i}": [f"cascade-1000000-s36-2e0b9be-{i}.json"]
         for book in ("typical", "stressed") for i in (1, 2)}, {},
        {f"{book}, U{i}": {
            "book, run": None,
            "reference (2,000 positions)": (
                lambda f, book=book: [f[0]["books"][book]["reference_seconds"]]),
            "hardened (aot), 1 thread": cascade(book, "hardened_1_thread"),
            "hardened (aot), 2 cores": cascade(book, "hardened_all_cores"),
            "numba, 1 thread": cascade(book, "numba_1_thread"),
            "numpy": cascade(book, "numpy")}
         for book in ("typical", "stressed") for i in (1, 2)}),
    ("book (1,000,000 x 64)", "rounds mean / max", "pairs liquidated", "numba, 1 thread",
     "numba, 2 cores", "numpy"): Table(
        {"typical": ["cascade-1000000-10267b2.json"],
         "stressed": ["cascade-1000000-10267b2.json"]}, {},
        {"typical": cascade_columns("typical"), "stressed": cascade_columns("stressed")}),
}


def tables(text: str) -> list[list[list[str]]]:
    """Each markdown table of a page: its rows of cells, the header first (no rule line)."""
    found: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def figures(cell: str) -> list[tuple[float, float]]:
    """The numbers a cell shows, each with half its last digit (what rounding allows); the
    hex of a commit in backticks is not a figure."""
    shown = re.sub(r"`[0-9a-f]{7,40}`", "", cell)
    out = []
    for number in NUMBER.findall(shown):
        decimals = len(number.split(".")[1]) if "." in number else 0
        out.append((float(number.replace(",", "")), 0.5 * 10 ** -decimals + 1e-9))
    return out


def commit_problems(cell: str, files: list[dict[str, Any]]) -> list[str]:
    shown = re.findall(r"`([0-9a-f]{7,40})`", cell)
    return [f"commit {c} is not the file's {f['commit'][:7]}" for c in shown for f in files
            if not f["commit"].startswith(c)]


def devnet_problems(cell: str, files: list[dict[str, Any]]) -> list[str]:
    shown = re.findall(r"\bv3\.\d\b", cell)
    return [f"Aave {v} is not the file's {f['aave']}" for v in shown for f in files
            if "aave" in f and f["aave"] != v]


def table_problems(text: str) -> list[str]:
    problems = []
    for rows in tables(text):
        header, body = tuple(rows[0]), rows[1:]
        spec = TABLES.get(header)
        if spec is None:
            problems.append(f"a table this test does not know (add it to TABLES): {header}")
            continue
        for cells in body:
            key = next((k for k in spec.rows if " | ".join(cells).startswith(k)), None)
            if key is None:
                problems.append(f"{header[0]}: a row with no result file: {cells}")
                continue
            files = [load(name) for name in spec.rows[key]]
            columns = spec.figures_of(key)
            for column, cell in zip(header, cells, strict=True):
                problems += [f"{key}, {column}: {p}" for p in commit_problems(cell, files)]
                problems += [f"{key}, {column}: {p}" for p in devnet_problems(cell, files)]
                expected = columns[column]
                shown = figures(cell) if expected is not None else []
                want = expected(files) if expected is not None else []
                if len(shown) != len(want) or any(
                        abs(value - figure) > half for (figure, half), value
                        in zip(shown, want, strict=False)):
                    problems.append(f"{key}, {column}: the page shows {cell!r}, the file "
                                    f"says {[round(v, 4) for v in want]}")
    return problems


def test_every_figure_in_a_bench_table_is_its_result_files() -> None:
    text = BENCH.read_text()
    assert len(tables(text)) >= 5
    assert table_problems(text) == []


def test_an_edited_figure_or_commit_fails() -> None:
    text = BENCH.read_text()
    row = "| 10,000 | `10267b2`, 2026-11-28 | 1.14 s | 8,805 |"
    assert row in text and "| typical | 7.4 / 10 |" in text
    for edited in (text.replace(row, row.replace("1.14 s", "1.04 s")),
                   text.replace("| 10,000, scan reader |", "| 100,000, scan reader |"),
                   text.replace("| typical | 7.4 / 10 |", "| typical | 7.4 / 11 |"),
                   text.replace("`2843102` | 1 % x 30 | 2,264 (83.9) | 390 ms",
                                "`2843102` | 1 % x 30 | 2,264 (83.9) | 39 ms"),
                   text.replace("| `6da1993` |", "| `6da1994` |"),
                   text.replace("| `3d774d5`, v3.0 |", "| `3d774d5`, v3.6 |")):
        assert edited != text and table_problems(edited), "an edit went unnoticed"


# --- figures in bench/README's prose, phrase by phrase ------------------------------------

BUILD_100K = "devnet-build-100000.json"
PROSE: list[tuple[str, str, Figures]] = [
    # (the phrase as the page writes it, its file, the figures in the order written)
    ("(at 100,000: ~17 minutes,\n2.2 GB at the peak;", BUILD_100K,
     lambda f: [f[0]["accounts"], f[0]["seconds"] / 60, gb(f[0]["peak_rss_mb_together"])]),
    ("The node\nserving the 100k devnet holds ~2.6 GB.", BUILD_100K,
     lambda f: [f[0]["accounts"] / 1000, gb(f[0]["rss_mb_anvil_serving_the_state"])]),
    ("**16 min 49 s, anvil's peak 2.06 GB, the build's Python 0.31 GB** (2.2 GB together), a 123 MB"
     "\ngzipped state; an anvil serving the built state loads it in 18.5 s and holds **2.58 GB**",
     BUILD_100K, lambda f: [*minutes_seconds(f[0]["seconds"]), gb(f[0]["peak_rss_mb_anvil"]),
                            gb(f[0]["peak_rss_mb_build_python"]),
                            gb(f[0]["peak_rss_mb_together"]), f[0]["state_json_gz_mb"],
                            f[0]["load_seconds"], gb(f[0]["rss_mb_anvil_serving_the_state"])]),
]


def prose_problems(text: str) -> list[str]:
    problems = []
    for phrase, name, expected in PROSE:
        if phrase not in text:
            problems.append(f"bench/README no longer says {phrase!r}: check the new words "
                            f"against results/{name} and update PROSE")
            continue
        shown, want = figures(phrase), expected([load(name)])
        if len(shown) != len(want) or any(abs(value - figure) > half for (figure, half), value
                                          in zip(shown, want, strict=False)):
            problems.append(f"{phrase!r}: results/{name} says {[round(v, 3) for v in want]}")
    return problems


def test_the_100k_builds_figures_in_prose_are_its_result_files() -> None:
    text = BENCH.read_text()
    assert prose_problems(text) == []
    edited = text.replace("holds **2.58 GB**", "holds **2.48 GB**")
    assert edited != text and prose_problems(edited)
