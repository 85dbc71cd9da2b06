"""The top-level API: ``ranker.load()`` ranks the bundled demo as rank.py does, ``ranker.list_models()`` names the
zoo, and a folder that is no export is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rank
import ranker
from ranker.serve import export
from ranker.tasks.loaders import load_dataset
from ranker.zoo.manifest import list_models


def test_load_ranks_the_demo_with_the_shipped_checkpoint_and_list_models_names_the_zoo() -> None:
    pipe = ranker.load()
    assert pipe.exported.config.models == ranker.list_models()  # the default checkpoint, for the default zoo
    result = pipe.rank(load_dataset(str(rank.DEMO)))
    assert sorted(r.model for r in result.ranking) == sorted(ranker.list_models())
    assert result.k == pipe.exported.config.rerank_k > 0
    assert [r.stage for r in result.ranking] == ["rerank"] * result.k + ["score"] * (len(result.ranking) - result.k)
    assert [r.score for r in result.ranking] == sorted((r.score for r in result.ranking), reverse=True)


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
