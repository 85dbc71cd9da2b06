"""A FAISS index of vectors (historical tasks' summaries, or model tokens), on the GPU when FAISS has one.

One API over both devices: ``VectorIndex.build`` makes an exact ``Flat`` index below ``IVF_MIN`` vectors and an
``IVF`` one (inverted lists, ``nprobe`` of them searched) from there on; both run on CPU and GPU. A cosine index
normalizes stored and query vectors inside FAISS (an ``IndexPreTransform``), so the file alone says how to query
it. The index moves to GPU 0 when the FAISS build has GPUs (``faiss.get_num_gpus() > 0``); it is always saved
from a CPU copy, so a file written on one machine loads on the other.

Example:
    >>> index = VectorIndex.build(summaries, cosine=True)   # [T, 2D] historical tasks
    >>> similarity, rows = index.search(query[None], 5)     # the 5 most similar tasks, best first
"""

from __future__ import annotations

from pathlib import Path

try:
    import faiss
except ModuleNotFoundError as err:  # an extra, so that a GPU machine can take the GPU build instead
    raise ModuleNotFoundError("FAISS is not installed: pip install -e '.[cpu]', or '.[gpu]' on a CUDA 13 machine "
                              "(docs/install.md, 'FAISS')") from err
import numpy as np
import torch

from ranker.files import write_atomic

IVF_MIN = 20_000  # vectors from which IVF replaces the exact Flat index
IVF_NPROBE = 16  # inverted lists searched per query (of about sqrt(N))


def _matrix(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 C-contiguous ``[N, d]``, what FAISS reads."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a [N, d] matrix, got shape {vectors.shape}")
    return vectors


def _to_gpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


class VectorIndex:
    """Nearest vectors by inner product (``cosine=True``: of unit-normalized vectors); rows are 0..N-1 in the
    order given to ``build``."""

    def __init__(self, index: faiss.Index) -> None:
        """Wraps a CPU index, moving it to the GPU when FAISS has one."""
        self.on_gpu = faiss.get_num_gpus() > 0
        self._index = _to_gpu(index) if self.on_gpu else index

    @classmethod
    def build(cls, vectors: torch.Tensor | np.ndarray, cosine: bool) -> VectorIndex:
        """Indexes ``vectors`` ``[N, d]``: Flat when N < ``IVF_MIN``, else IVF with about sqrt(N) lists."""
        vectors = _matrix(vectors)
        n, d = vectors.shape
        if n == 0:
            raise ValueError("cannot index zero vectors")
        if n < IVF_MIN:
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, int(np.sqrt(n)), faiss.METRIC_INNER_PRODUCT)
            index.nprobe = IVF_NPROBE
        if cosine:
            index = faiss.IndexPreTransform(faiss.NormalizationTransform(d, 2.0), index)
        index.train(vectors)  # IVF: k-means for the lists; a no-op for Flat
        index.add(vectors)
        return cls(index)

    @property
    def size(self) -> int:
        """Number of indexed vectors."""
        return self._index.ntotal

    @property
    def dim(self) -> int:
        """Width of the indexed vectors."""
        return self._index.d

    def search(self, queries: torch.Tensor | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(n, size)`` best rows of each query: similarities and row numbers, each ``[Q, n]``, best first.

        IVF is approximate: a row can be missed (and then -1 pads the result when fewer than n were found).
        """
        queries = _matrix(queries)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have width {queries.shape[1]}, the index holds width {self.dim}")
        return self._index.search(queries, min(n, self.size))

    def save(self, path: str | Path) -> None:
        """Writes the index (a CPU copy) atomically."""
        cpu = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        write_atomic(path, faiss.serialize_index(cpu).tobytes())

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Reads an index written by ``save`` (FAISS's own format: no pickle)."""
        return cls(faiss.read_index(str(path)))
