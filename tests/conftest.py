"""Shared fixtures: a tiny benchmark of real zoo members and real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranker import benchmark as bm
from ranker import zoo

TINY_ZOO = ("tiny_resnet_fmnist", "tiny_convnext_amnist")


@pytest.fixture
def tiny_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bm.Benchmark:
    """Two real zoo members × two scikit-learn digits tasks (20 images per class in the pool)."""
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    full = zoo.load_manifest()
    manifest = tmp_path / "zoo.yaml"
    lines = ["name: tiny", "models:"]
    for entry in (e for e in full.models if e.name in TINY_ZOO):
        lines.append(f"  - {{name: {entry.name}, arch: {entry.arch}, pretraining: x, feature_dim: {entry.feature_dim}, "
                     f"input_size: {entry.input_size}, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], "
                     f"weights_file: {entry.weights_file}, arch_kwargs: {dict(entry.arch_kwargs)}, "
                     f"weights_sha256: {entry.weights_sha256}}}")
    manifest.write_text("\n".join(lines) + "\n")
    root = tmp_path / "bench"
    root.mkdir()
    (root / "benchmark.yaml").write_text(
        f"name: tiny\nmanifest: {manifest}\ngeneral_encoder: tiny_resnet_fmnist\npool_per_class: 20\ntasks:\n"
        "  - {id: d3, role: train, dataset: digits, classes: [1, 2, 3], n_train: 5, n_test: 10}\n"
        "  - {id: d2-inv, role: test, dataset: digits, variant: invert, classes: [0, 8], n_train: 8, n_test: 12}\n"
    )
    return bm.load_benchmark(root)
