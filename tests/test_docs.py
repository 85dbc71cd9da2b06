"""The README and docs/: the README stays a short product page, every figure it states is read back from the generated
report it cites (so it cannot go stale), and every relative link in the README and docs/ leads to a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
METHOD_ROW = re.compile(r"^\| (\w+) \| (-?\d+\.\d+) \[")
FIGURE = r"(-?\d+\.\d+)"


def evaluation_tables(report: Path) -> dict[str, dict[str, float]]:
    """Mean wtau per method in an ``EVALUATION.md``, per protocol: ``{"fixed" | "cv": {method: wtau}}``."""
    tables: dict[str, dict[str, float]] = {}
    protocol = None
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            protocol = "fixed" if line.startswith("## Fixed split") else "cv" if "cross-validation" in line else None
        elif protocol and (match := METHOD_ROW.match(line)):
            tables.setdefault(protocol, {})[match.group(1)] = float(match.group(2))
    return tables


def cv_differences(report: Path) -> dict[str, str]:
    """The grouped-CV Δwtau vs the prior per method, as printed (``+0.047 [+0.035, +0.059]``)."""
    section = report.read_text().split("## Leave-one-group-out", 1)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+) \| [^|]+\| [^|]+\| [^|]+\| \**([^|*]+?)\** \|",
                                                         section, re.MULTILINE)}


def test_the_readme_is_a_short_product_page() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 12_500
    assert text.splitlines()[3:5] == [
        "bash .ci/setup && .venv/bin/python rank.py   # set up, then run the main job on the bundled demo dataset",
        "bash .ci/run                                 # set up, then lint and run the tests (what CI runs)"]
    assert "previous release" not in text and not re.search(r"\bissue \d+", text)


def test_the_headline_figures_are_the_generated_reports() -> None:
    paragraphs = [" ".join(p.split("\n")) for p in README.read_text().split("\n\n")]
    headline = next(p for p in paragraphs if p.startswith("**Benchmark v3, grouped"))
    numbers = re.search(rf"the ranker {FIGURE} mean weighted tau, the prior {FIGURE} \(([+-]\S+ \[\S+ \S+\])\), "
                        rf"LogME {FIGURE}, Fennec {FIGURE}", headline)
    assert numbers, headline
    report = ROOT / "data/benchmarks/v3/EVALUATION.md"
    cv = evaluation_tables(report)["cv"]
    assert float(numbers.group(1)) == pytest.approx(cv["ranker_rerank"], abs=5e-4)
    assert float(numbers.group(2)) == pytest.approx(cv["prior"], abs=5e-4)
    assert numbers.group(3) == cv_differences(report)["ranker_rerank"]
    assert float(numbers.group(4)) == pytest.approx(cv["logme"], abs=5e-4)
    assert float(numbers.group(5)) == pytest.approx(cv["fennec"], abs=5e-4)


def test_the_results_table_is_the_generated_reports() -> None:
    """Each row of "Results at a glance" links its report (or repeats the row above's) and names its protocol."""
    section = README.read_text().split("## Results at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [")]
    assert len(rows) == 6
    columns = ["ranker_rerank", "ranker", "fennec", "prior", "logme"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        report = ROOT / re.search(r"\]\(([^)]+)\)", cells[0]).group(1)
        protocol = "cv" if "grouped CV" in cells[1] else "fixed"
        table = evaluation_tables(report)[protocol]
        for method, cell in zip(columns, cells[2:], strict=True):
            assert float(cell) == pytest.approx(table[method], abs=5e-4), (row, method)


@pytest.mark.parametrize("page", [README, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
                                  *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_relative_links_lead_to_files(page: Path) -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (page.parent / link).exists()]
    assert not missing, missing


def test_every_benchmark_script_is_in_the_index() -> None:
    index = (ROOT / "benchmarks" / "README.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts and [s for s in scripts if f"`{s}" not in index] == []


def test_no_benchmark_script_imports_another() -> None:
    """What the scripts share lives in ``ranker.evaluate``; a script importing a sibling couples two claims."""
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    imports = {p.name: re.findall(r"^(?:from|import) (\w+)", p.read_text(), re.M)
               for p in (ROOT / "benchmarks").glob("*.py")}
    assert {name: [m for m in found if m in scripts or m == "benchmarks"] for name, found in imports.items()
            if any(m in scripts or m == "benchmarks" for m in found)} == {}
