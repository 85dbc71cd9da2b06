"""The top-level API: ``ranker.load()`` ranks the bundled demo as rank.py does, ``ranker.list_models()`` names the
zoo, and a folder that is no export is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import rank
import ranker
from ranker.serve import export
from ranker.tasks.loaders import load_dataset
from ranker.zoo.manifest import list_models

ROW = re.compile(r"\s*(\d+)\s+(\S+)\s+(-?[\d.]+)\s+(\w+)\s+(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]")


def test_load_ranks_the_demo_with_the_shipped_checkpoint_and_list_models_names_the_zoo() -> None:
    pipe = ranker.load()
    assert pipe.exported.config.models == ranker.list_models()  # the default checkpoint, for the default zoo
    result = pipe.rank(load_dataset(str(rank.DEMO)))
    assert sorted(r.model for r in result.ranking) == sorted(ranker.list_models())
    assert result.k == pipe.exported.config.rerank_k > 0
    assert [r.stage for r in result.ranking] == ["rerank"] * result.k + ["score"] * (len(result.ranking) - result.k)
    assert [r.score for r in result.ranking] == sorted((r.score for r in result.ranking), reverse=True)
    # the README's quick start shows this ranking as rank.py prints it: its rows are read back from it
    sample = (Path(rank.ROOT) / "README.md").read_text().split("## Quick start", 1)[1].split("```")[1].splitlines()
    printed = rank.table(result).splitlines()
    assert sample[1].split(": ", 1)[1] == printed[0].split(": ", 1)[1]  # the id hashes the files' mtimes
    assert sample[2].split(" (")[0] == printed[2].split(" (")[0]  # the nearest historical task
    rows = [ROW.fullmatch(line) for line in sample if ROW.fullmatch(line)]
    assert len(rows) >= 4
    for row in rows:
        place, model, score, stage, gap, low, high = row.groups()
        shown = result.ranking[int(place) - 1]
        assert (shown.model, shown.stage) == (model, stage)
        assert shown.score == pytest.approx(float(score), abs=0.01)  # another CPU's features differ in the 4th digit
        assert [shown.predicted_gap, *shown.gap_80] == pytest.approx([float(gap), float(low), float(high)], abs=0.1)


def test_load_refuses_a_folder_that_is_no_export(tmp_path: Path) -> None:
    with pytest.raises(export.ExportError, match="is not an exported ranker"):
        ranker.load(tmp_path)


def test_load_takes_any_export_with_the_zoo_it_was_trained_on() -> None:
    pipe = ranker.load(Path(rank.ROOT) / "checkpoints" / "v2-default")
    v2 = Path(rank.ROOT) / "ranker" / "configs" / "zoo" / "v2.yaml"
    assert len(pipe.exported.config.models) == 22 and pipe.exported.config.models == list_models(v2)


@pytest.mark.integration
def test_lightning_advertises_nothing_once_ranker_is_imported() -> None:
    code = "import {}; import lightning as L; L.Trainer(logger=False, enable_progress_bar=False)"
    said = [subprocess.run([sys.executable, "-c", code.format(module)], capture_output=True, text=True, timeout=120)
            for module in ("os", "ranker")]
    assert "litlogger" in said[0].stderr + said[0].stdout  # what the filter is for (if this fails, drop the filter)
    assert "litlogger" not in said[1].stderr + said[1].stdout and said[1].returncode == 0
