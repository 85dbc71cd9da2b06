"""What a task is, and the tasks derived from one: few-shot episodes, stratified splits and domain variants.

A :class:`Task` is a labelled image classification dataset whose ``id`` doubles as a cache key: equal ids mean the same
samples, labels and order. Derived tasks extend their parent's id with ``/<suffix>``. Reading tasks from files and
from the installed real datasets is :mod:`ranker.tasks.loaders`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


class DatasetError(ValueError):
    """A dataset is missing, malformed or unusable for ranking; the message names the problem and the fix."""


@dataclass(frozen=True, eq=False)
class Task:
    """A labelled image classification dataset (or an episode, split or variant of one).

    Attributes:
        id: Stable identifier and cache key: equal ids mean the same samples, labels and order.
        labels: int64 [N] class ids in 0..C-1; every class occurs at least once.
        class_names: One name per class id (C of them, C >= 2).
        images: uint8 pixels held in memory, [N, H, W] for grayscale or [N, H, W, 3] for RGB.
        paths: Image files, opened on demand. Exactly one of ``images`` and ``paths`` is set.
    """

    id: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise DatasetError(f"dataset {self.id!r} needs exactly one of images and paths; pass one, not both/neither")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"dataset {self.id!r} has {labels.dtype} labels of shape {labels.shape}; "
                               "pass a 1-D integer array with one class id per image")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        n = len(self.images) if self.images is not None else len(self.paths)
        if n != len(labels):
            raise DatasetError(f"dataset {self.id!r} has {n} images but {len(labels)} labels; give one label per image")
        pixels = self.images
        if pixels is not None and (pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[3:] not in ((), (3,))):
            raise DatasetError(f"dataset {self.id!r} has {pixels.dtype} images of shape {pixels.shape}; "
                               "convert them to uint8 [N, H, W] (grayscale) or [N, H, W, 3] (RGB)")
        if len(self.class_names) < 2:
            found = f"only one class ({self.class_names[0]!r})" if self.class_names else "no classes"
            raise DatasetError(f"dataset {self.id!r} has {found}; ranking needs at least two labelled classes")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DatasetError(f"dataset {self.id!r} has labels outside 0..{self.num_classes - 1}; "
                               "labels must index class_names")
        missing = [self.class_names[c] for c in np.flatnonzero(np.bincount(labels, minlength=self.num_classes) == 0)]
        if missing:
            raise DatasetError(f"dataset {self.id!r} has no samples of class(es) {missing}; drop them from class_names")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image(self, i: int) -> Image.Image:
        """Returns sample ``i`` as an RGB image; grayscale pixels are replicated into all three channels, and an
        image with transparency (an alpha channel or a palette's transparent colour) is composited onto white."""
        if self.images is not None:
            return Image.fromarray(self.images[i]).convert("RGB")
        with Image.open(self.paths[i]) as im:
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, "white")
                canvas.paste(rgba, mask=rgba)
                return canvas
            return im.convert("RGB")

    def subset(self, indices: Sequence[int] | np.ndarray, suffix: str) -> Task:
        """Returns the samples at ``indices``, in that order, as task ``f"{id}/{suffix}"``.

        The caller must choose a suffix that determines ``indices``, or the id stops being a valid cache key.
        Labels are re-indexed to 0..C'-1 in the sorted order of the old class ids that remain.
        """
        idx = np.asarray(indices, dtype=np.int64)
        kept, labels = np.unique(self.labels[idx], return_inverse=True)
        return Task(
            id=f"{self.id}/{suffix}",
            labels=labels,
            class_names=tuple(self.class_names[c] for c in kept),
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else tuple(self.paths[i] for i in idx),
        )


def sample_episode(task: Task, ways: int, shots: int, seed: int, at_most: bool = False) -> Task:
    """Draws a few-shot episode: ``ways`` random classes, then ``shots`` random samples of each.

    The id suffix ``w{ways}s{shots}-seed{seed}`` follows Model Spider's episode naming. Samples are grouped by class
    (in class id order), and by their order in ``task`` within a class. With ``at_most`` a class with fewer than
    ``shots`` samples keeps all of them (suffix ``w{ways}s{shots}max-seed{seed}`` when one does), where by default
    it is an error; classes with enough samples get the same draw either way.
    """
    if not 2 <= ways <= task.num_classes:
        raise DatasetError(f"cannot draw a {ways}-way episode from dataset {task.id!r} with {task.num_classes} "
                           f"classes; choose ways between 2 and {task.num_classes}")
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    picked, short = [], False
    for c in np.sort(rng.choice(task.num_classes, size=ways, replace=False)):
        members = np.flatnonzero(task.labels == c)
        if len(members) < shots and not at_most:
            raise DatasetError(f"class {task.class_names[c]!r} of dataset {task.id!r} has only {len(members)} "
                               f"samples, fewer than shots={shots}; lower shots")
        short |= len(members) < shots
        picked.append(np.sort(rng.choice(members, size=min(shots, len(members)), replace=False)))
    return task.subset(np.concatenate(picked), f"w{ways}s{shots}{'max' if short else ''}-seed{seed}")


def split(task: Task, test_fraction: float, seed: int) -> tuple[Task, Task]:
    """Splits ``task`` into (train, test), stratified: every class lands in both parts.

    Each class gives round(n * test_fraction) of its n samples to test, clamped to 1..n-1. Both parts keep the order
    of ``task``; their id suffixes ``train{test_fraction}-seed{seed}`` and ``test...`` include the fraction so
    different splits never share an id.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(task), dtype=bool)
    for c, name in enumerate(task.class_names):
        members = np.flatnonzero(task.labels == c)
        if len(members) < 2:
            raise DatasetError(f"class {name!r} of dataset {task.id!r} has a single sample; a split needs at least "
                               "two per class (one for train, one for test)")
        n_test = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        is_test[rng.choice(members, size=n_test, replace=False)] = True
    tag = f"{test_fraction}-seed{seed}"
    return task.subset(np.flatnonzero(~is_test), f"train{tag}"), task.subset(np.flatnonzero(is_test), f"test{tag}")


def _lowres(images: np.ndarray) -> np.ndarray:
    height, width = images.shape[1:3]
    small, full = (max(1, width // 4), max(1, height // 4)), (width, height)
    return np.stack([
        np.asarray(Image.fromarray(x).resize(small, Image.Resampling.BOX).resize(full, Image.Resampling.NEAREST))
        for x in images
    ])


def _grey(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB images ``[N, H, W, 3]`` (PIL's "L") in three equal channels; grey ``[N, H, W]`` as is."""
    if images.ndim == 3:
        return images
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.round(luma).astype(np.uint8)[..., None], 3, axis=3)


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "invert": lambda images: 255 - images,
    "grey": _grey,
    "rot90": lambda images: np.ascontiguousarray(np.rot90(images, axes=(1, 2))),
    "lowres": _lowres,
}


def variant(task: Task, name: str) -> Task:
    """Returns ``task`` with a domain shift applied to every image, as task ``f"{id}/{name}"``.

    Variants: "invert" (255 - x), "grey" (colour to luma: the same task without colour), "rot90" (90 degrees
    counter-clockwise; height and width swap) and "lowres" (4x BOX
    downsample, then NEAREST upsample back to the original size, giving blocks of about 4x4 pixels). Path-based tasks
    are first read into memory as RGB, which needs all their images to have the same size.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    if task.images is not None:
        images = task.images
    else:
        arrays = [np.asarray(task.image(i)) for i in range(len(task))]
        if len({a.shape for a in arrays}) > 1:
            raise DatasetError(f"images of dataset {task.id!r} differ in size; resize them to one size for variants")
        images = np.stack(arrays)
    return Task(id=f"{task.id}/{name}", labels=task.labels, class_names=task.class_names, images=VARIANTS[name](images))
