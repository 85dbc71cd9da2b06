"""Batched frozen-feature extraction with an atomic on-disk cache.

A cache file holds the features of one (model, weights, task, transform) and is named by the hash of
all four, so a change of any of them misses the cache instead of returning stale features. Files are
written to a temporary name and renamed into place, so a crash never leaves a half-written file under
a real name; a file that is found damaged anyway (truncated by a full disk, say) is rebuilt.

Examples:
    >>> from ranker.tasks import features, loaders
    >>> from ranker.zoo import manifest as zoo
    >>> feats = features.extract(zoo.load_extractor("mobilenetv2_100"), loaders.load_dataset("digits"))
    >>> feats.shape
    torch.Size([1797, 1280])
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ranker.files import write_atomic
from ranker.tasks.datasets import Task
from ranker.zoo.manifest import FrozenExtractor


def default_cache_dir() -> Path:
    """``$RANKER_CACHE`` if set, else ``~/.cache/ranker/features``."""
    return Path(os.environ.get("RANKER_CACHE", Path.home() / ".cache" / "ranker" / "features"))


def best_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _ieee_float32() -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in full float32 while inside.

    PyTorch runs cuDNN convolutions in TF32 by default on Ampere and later GPUs. On an H200 that moved
    MobileNetV2's features by up to 0.017 (mean |feature| 0.3) from the CPU's, while the cache key, rightly,
    does not name the device; in IEEE float32 they agreed to 6e-6 (benchmarks/gpu_check.sh, docs/install.md "On a GPU").
    """
    settings = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    before = [s.fp32_precision for s in settings]
    try:
        for s in settings:
            s.fp32_precision = "ieee"
        yield
    finally:
        for s, precision in zip(settings, before, strict=True):
            s.fp32_precision = precision


def cache_key(extractor: FrozenExtractor, task: Task) -> str:
    """Hash of everything the features depend on: model name, loaded weights, task samples, transform."""
    text = "|".join([extractor.entry.name, extractor.weights_sha256, task.id, repr(extractor.transform)])
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(extractor: FrozenExtractor, task: Task, cache_dir: Path) -> Path:
    """Where the features of (extractor, task) live: ``<cache>/<model>/<readable task id>-<key>.safetensors``."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", task.id)[:80]
    return cache_dir / extractor.entry.name / f"{readable}-{cache_key(extractor, task)[:20]}.safetensors"


class _Images(Dataset):
    def __init__(self, task: Task, transform) -> None:
        self.task, self.transform = task, transform

    def __len__(self) -> int:
        return len(self.task)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.task.image(i))


def _read_cached(path: Path, n: int, dim: int) -> torch.Tensor | None:
    """The cached features, or None when the file is absent or damaged (a damaged file is deleted)."""
    if not path.exists():
        return None
    try:
        feats = load_file(path)["features"]
        if feats.shape != (n, dim):
            raise ValueError(f"shape {tuple(feats.shape)}, expected {(n, dim)}")
        return feats
    except (SafetensorError, ValueError, KeyError, OSError) as err:
        warnings.warn(f"features cache {path} is damaged ({err}); rebuilding it", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Writes a safetensors file atomically (``files.write_atomic``): readers never see half a file."""
    write_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def extract(
    extractor: FrozenExtractor,
    task: Task,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Features ``[N, D]`` (float32, CPU, in task order) of every sample of ``task``, from cache when possible.

    Args:
        extractor: a frozen zoo member (``zoo.load_extractor``).
        task: the images to embed.
        cache_dir: cache root; None means ``default_cache_dir()``.
        batch_size: images per forward pass. None: 256 on a GPU; on the CPU about 2^18 input pixels per batch,
            between 8 and 256 images (at 224 px, batches of 8 ran 1.5-3x faster than 128 on 2 cores).
        device: where the forward passes run; None picks CUDA when present.
        progress: show a progress bar.
    """
    path = cache_path(extractor, task, Path(cache_dir) if cache_dir is not None else default_cache_dir())
    cached = _read_cached(path, len(task), extractor.entry.feature_dim)
    if cached is not None:
        return cached
    device = device or best_device()
    on_gpu = device.type == "cuda"
    if batch_size is None:
        batch_size = 256 if on_gpu else min(256, max(8, 2**18 // extractor.entry.input_size**2))
    # A GPU outruns one process decoding and resizing images; on the CPU, workers would take the forward's cores.
    workers = min(8, (os.cpu_count() or 1) - 1) if on_gpu else 0
    extractor.to(device)
    loader = DataLoader(_Images(task, extractor.transform), batch_size=batch_size, num_workers=workers)
    chunks = []
    desc = f"{extractor.entry.name} · {task.id}"
    bar = tqdm(total=len(task), desc=desc, unit="img", disable=not progress, leave=False)
    with bar, _ieee_float32() if on_gpu else contextlib.nullcontext():
        for batch in loader:
            chunks.append(extractor(batch.to(device, non_blocking=True)).float().cpu())
            bar.update(len(batch))
    feats = torch.cat(chunks)
    meta = {"model": extractor.entry.name, "weights_sha256": extractor.weights_sha256, "task": task.id}
    save_atomic({"features": feats}, path, meta)
    return feats
