"""The FAISS index: exact Flat search matches brute force, IVF for large sets, save/load is exact, GPU = CPU."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from ranker.serve import index as ix
from ranker.serve.index import VectorIndex


def _vectors(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _brute(base: np.ndarray, queries: np.ndarray, n: int, cosine: bool) -> np.ndarray:
    if cosine:
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :n]


@pytest.mark.parametrize("cosine", [True, False])
def test_flat_search_is_exact(cosine: bool) -> None:
    base, queries = _vectors(500, 24, 0), _vectors(7, 24, 1) * 5
    index = VectorIndex.build(base, cosine=cosine)
    similarity, rows = index.search(queries, 10)
    np.testing.assert_array_equal(rows, _brute(base, queries, 10, cosine))
    assert (np.diff(similarity, axis=1) <= 0).all()
    if cosine:  # a stored vector, scaled, is its own nearest neighbour at similarity 1
        similarity, rows = index.search(base[:3] * 7, 1)
        np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])
        np.testing.assert_allclose(similarity[:, 0], 1, atol=1e-5)


def test_large_sets_get_an_ivf_index_with_high_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ix, "IVF_MIN", 1000)
    base, queries = _vectors(4000, 16, 2), _vectors(50, 16, 3)
    index = VectorIndex.build(base, cosine=True)
    assert isinstance(faiss.extract_index_ivf(index._index), faiss.IndexIVF)
    _, rows = index.search(queries, 10)
    truth = _brute(base, queries, 10, cosine=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)])
    assert recall > 0.85  # 16 of 63 lists probed (0.92 seen); exact search would be 1.0


@pytest.mark.parametrize("n", [300, 3000])
def test_save_load_round_trip_is_exact(n: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ix, "IVF_MIN", 1000)  # 3000 vectors: IVF; 300: Flat
    base, queries = _vectors(n, 32, 4), _vectors(20, 32, 5)
    index = VectorIndex.build(base, cosine=True)
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss")
    assert (loaded.size, loaded.dim) == (n, 32)
    for got, want in zip(loaded.search(queries, 8), index.search(queries, 8), strict=True):
        np.testing.assert_array_equal(got, want)


def test_bad_shapes_are_refused() -> None:
    index = VectorIndex.build(_vectors(10, 4, 6), cosine=False)
    with pytest.raises(ValueError, match="width 5"):
        index.search(_vectors(1, 5, 7), 3)
    with pytest.raises(ValueError, match="zero vectors"):
        VectorIndex.build(np.zeros((0, 4)), cosine=True)
    assert index.search(_vectors(2, 4, 8), 50)[1].shape == (2, 10)  # n is capped at the index size


@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs a FAISS GPU build and a GPU")
@pytest.mark.parametrize("n", [2000, 30000])
def test_the_gpu_index_returns_what_the_cpu_one_does(n: int) -> None:
    base, queries = _vectors(n, 64, 9), _vectors(100, 64, 10)
    gpu = VectorIndex.build(base, cosine=True)
    assert gpu.on_gpu
    cpu = faiss.index_gpu_to_cpu(gpu._index)  # the same trained lists, searched by the CPU code
    similarity, rows = gpu.search(queries, 10)
    cpu_similarity, cpu_rows = cpu.search(queries, 10)
    assert (rows == cpu_rows).mean() > 0.99  # float sums in another order may swap near-ties
    np.testing.assert_allclose(similarity, cpu_similarity, atol=1e-4)
