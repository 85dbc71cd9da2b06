"""benchmarks/general_encoder.py: a benchmark's copy with another general encoder reads that member's own
prototypes, so candidates are compared on the same statistics."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks import general_encoder
from data import build_history
from ranker.tasks import benchmark as bm
from ranker.tasks.history import HistoryStore


def test_a_copy_with_another_general_encoder_takes_that_members_own_prototypes(tiny_bench: bm.Benchmark,
                                                                              tmp_path: Path) -> None:
    build_history.build_stats(tiny_bench)
    HistoryStore().save(tiny_bench.root / "history.csv")
    copy = bm.load_benchmark(general_encoder.with_general_encoder(tiny_bench, "tiny_convnext_amnist", tmp_path / "c"))
    assert copy.config.general_encoder == "tiny_convnext_amnist" and copy.models == tiny_bench.models
    prototypes, summary = copy.task_stats()["d3"]
    own = tiny_bench.model_stats()["d3"]["tiny_convnext_amnist"]
    assert torch.equal(prototypes, own.float()) and summary.shape == (2 * own.shape[1],)
    assert tiny_bench.task_stats()["d3"][0].shape[1] != prototypes.shape[1]  # the other member's width
