"""Benchmark definitions: which zoo, which tasks (training or test role), where their history and statistics live.

A benchmark is a folder ``data/benchmarks/<name>/`` holding ``benchmark.yaml`` (a :class:`BenchmarkConfig`),
``history.csv`` (a :class:`~ranker.tasks.history.HistoryStore`) and ``stats.safetensors`` (per-task statistics of the
general encoder, see :mod:`ranker.tasks.stats`). Tasks are drawn from datasets in two steps so that features are
extracted once per dataset rather than once per task: each (dataset, variant) is first cut to a fixed *pool*
(``pool_per_class`` images of every class, seed 0), then every task takes its classes and its per-class train
and test counts from that pool.

Examples:
    >>> bench = load_benchmark("offline")
    >>> [t.id for t in bench.config.tasks if t.role == "test"][:2]
    >>> train, test = task_parts(bench.config.tasks[0], bench.config)   # pools + indices + labels
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from ranker.tasks import datasets, loaders
from ranker.tasks.history import HistoryStore
from ranker.zoo.manifest import REPO_ROOT, ZooEntry, load_manifest

BENCHMARKS_DIR = REPO_ROOT / "data" / "benchmarks"
DEFAULT_BENCHMARK = "v3"


@dataclass
class TaskSpec:
    """One benchmark task: a class subset of a dataset pool, split into a training part and a held-out part."""

    id: str  # short unique name, the task id of every history record
    role: str  # "train": the ranker may learn from it; "test": only for evaluation
    dataset: str  # a loaders.load_dataset spec, or "animal_mnist_heldout" (the 30% kept out of pre-training)
    variant: str = "none"  # domain shift applied to every image: none, invert, rot90, lowres
    classes: list[int] = field(default_factory=list)  # class ids of the dataset to keep; empty: all
    n_train: int = 0  # training images per class (what a user would fine-tune on); 0: half the pool (all of it
    # when test_dataset is set)
    n_test: int = 0  # held-out images per class the accuracy is measured on; 0: the rest of the pool
    seed: int = 0  # seed of the per-class draw
    test_dataset: str | None = None  # a separate held-out dataset (e.g. an official test folder); then n_test: all
    group: str = field(default="", repr=False)  # what grouped cross-validation holds out whole; empty: the dataset
    # (repr=False: the spec's repr hashes into part ids, and the group does not change a part's images)

    @property
    def group_name(self) -> str:
        """The task's cross-validation group: ``group``, or its dataset when none is given."""
        return self.group or self.dataset


@dataclass
class FinetuneRecipe:
    """The one fine-tuning recipe of a benchmark's ground truth (data/build_history.py runs it).

    Every parameter is trained with a new linear head, cross-entropy, no augmentation, AdamW with cosine decay
    to 0 and no warm-up, a fixed number of steps whatever the task size (as VTAB-1k fixes steps, not epochs).
    ``lrs`` and ``head_norm`` make one recipe fair to members whose trunks a learning rate that suits the others
    wrecks, or whose features differ from the others' in scale by orders of magnitude.
    """

    name: str = "finetune-v1"  # recorded in every record's `recipe` column; change it when any value changes
    steps: int = 40  # optimizer steps
    batch_size: int = 16  # or the whole training part when it is smaller
    lr: float = 2e-4  # backbone learning rate
    lrs: dict[str, float] = field(default_factory=dict)  # member -> backbone learning rate in place of lr (its head's
    # is that x head_lr_mult)
    head_norm: list[str] = field(default_factory=list)  # members whose head reads standardized features (BatchNorm
    # without affine parameters: batch statistics while training, then the trained trunk's statistics on the training
    # images); lrs and head_norm are chosen per member on training tasks (benchmarks/member_lr.py)
    head_lr_mult: float = 10.0  # the new head's learning rate is lr x this
    weight_decay: float = 0.01
    max_input_size: int = 64  # images resized to min(native, this) px; 0: native size
    input_sizes: dict[str, int] = field(default_factory=dict)  # member -> px, in place of max_input_size (still at
    # most native): where the budget gives members different sizes
    seed: int = 0

    def member_lr(self, name: str) -> float:
        """The backbone learning rate of member ``name``: its ``lrs`` entry, else ``lr``."""
        return self.lrs.get(name, self.lr)


@dataclass
class BenchmarkConfig:
    """``benchmark.yaml``: the zoo, the general encoder and the tasks."""

    name: str  # folder name under data/benchmarks/
    manifest: str  # zoo manifest, relative to the repository root
    general_encoder: str  # zoo member whose features give every task's statistics (ranker.tasks.stats)
    pool_per_class: int = 100  # images per class kept from each (dataset, variant); 0: keep all
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)  # the ground truth's fine-tuning recipe
    tasks: list[TaskSpec] = field(default_factory=list)  # training and test tasks
    val_tasks: list[str] = field(default_factory=list)  # training tasks that validate a ranker trained here (a run's
    # data.val_tasks overrides them); empty: Benchmark.validation_tasks draws them


@dataclass
class Benchmark:
    """A loaded benchmark: its config, its folder and its history."""

    config: BenchmarkConfig
    root: Path
    history: HistoryStore

    def task_ids(self, role: str) -> list[str]:
        return [t.id for t in self.config.tasks if t.role == role]

    def validation_tasks(self) -> list[str]:
        """The tasks that validate a ranker trained on this benchmark: ``val_tasks`` of its config, else the last
        training task of each training group, largest groups first, at most a quarter of the training tasks (at
        least one), so that inner cross-validation keeps a validation task outside most held-out groups."""
        if self.config.val_tasks:
            return list(self.config.val_tasks)
        groups: dict[str, list[str]] = {}
        for t in self.config.tasks:
            if t.role == "train":
                groups.setdefault(t.group_name, []).append(t.id)
        largest = sorted(groups.values(), key=len, reverse=True)
        return [ids[-1] for ids in largest][: max(1, sum(map(len, largest)) // 4)]

    def files_digest(self) -> hashlib._Hash:
        """A running hash of the files a ranker learns from (``history.csv`` and both statistics files, a missing one
        as ``-``), read now: with the config and tasks added (``.copy()`` it), the key of a result kept on disk."""
        digest = hashlib.sha256()
        for name in ("history.csv", "stats.safetensors", "model_stats.safetensors"):
            path = self.root / name
            digest.update(path.read_bytes() if path.is_file() else b"-")
        return digest

    @property
    def argument(self) -> str:
        """What to pass as ``--benchmark`` to name this benchmark: its name under data/benchmarks/, else its folder."""
        return self.root.name if self.root.parent == BENCHMARKS_DIR else str(self.root)

    @property
    def manifest_path(self) -> Path:
        return REPO_ROOT / self.config.manifest

    def _stats_file(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors of a statistics file and its metadata, read in one opening."""
        path = self.root / name
        if not path.is_file():
            raise ValueError(f"{path} is missing; build it with `python -m data.build_history --benchmark "
                             f"{self.argument} --kind stats`")
        with safe_open(path, "pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}

    def task_stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Task id -> (general-encoder class prototypes ``[C, D]``, summary vector ``[2D]``) of its training part.

        Raises:
            ValueError: the file was built with another general encoder than the config's (task tokens from one
                member, a checkpoint exported for another).
        """
        tensors, metadata = self._stats_file("stats.safetensors")
        built_with = metadata.get("general_encoder")
        if built_with != self.config.general_encoder:
            raise ValueError(f"{self.root / 'stats.safetensors'} holds {built_with}'s statistics, the config names "
                             f"{self.config.general_encoder}; rebuild them with `python -m data.build_history "
                             f"--benchmark {self.argument} --kind stats`")
        return {t.id: (tensors[f"{t.id}/prototypes"], tensors[f"{t.id}/summary"]) for t in self.config.tasks}

    def model_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Task id -> model -> that model's own class prototypes ``[C, D_m]`` (float16) of the training part."""
        tensors, _ = self._stats_file("model_stats.safetensors")
        return {t.id: {m: tensors[f"{t.id}/{m}"] for m in self.models if f"{t.id}/{m}" in tensors}
                for t in self.config.tasks}

    @functools.cached_property
    def entries(self) -> dict[str, ZooEntry]:
        """The zoo's manifest entries by name, in manifest order (read once)."""
        return {e.name: e for e in load_manifest(self.manifest_path).models}

    @property
    def models(self) -> list[str]:
        """The zoo's model names, in manifest order."""
        return list(self.entries)


def load_config(path: str | Path) -> BenchmarkConfig:
    """Reads and type-checks a ``benchmark.yaml``; task ids must be unique and roles train or test."""
    config: BenchmarkConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), OmegaConf.load(path))
    )
    ids = [t.id for t in config.tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path} repeats task ids; make each id unique")
    bad = [t.id for t in config.tasks if t.role not in ("train", "test")]
    if bad:
        raise ValueError(f"{path}: tasks {bad} have a role other than train or test")
    return config


def load_benchmark(name_or_dir: str | Path = DEFAULT_BENCHMARK) -> Benchmark:
    """Loads ``data/benchmarks/<name>/`` (or a folder path): config and history (empty if not built yet)."""
    root = Path(name_or_dir)
    if not root.is_dir():
        root = BENCHMARKS_DIR / str(name_or_dir)
    if not (root / "benchmark.yaml").is_file():
        known = sorted(p.name for p in BENCHMARKS_DIR.iterdir() if (p / "benchmark.yaml").is_file())
        raise ValueError(f"no benchmark {name_or_dir!r}; pass one of {known} or a folder with a benchmark.yaml")
    history_path = root / "history.csv"
    history = HistoryStore.load(history_path) if history_path.is_file() else HistoryStore()
    return Benchmark(load_config(root / "benchmark.yaml"), root, history)


@functools.lru_cache(maxsize=16)
def pool(dataset: str, variant: str, per_class: int) -> datasets.Task:
    """The images every task of (dataset, variant) draws from: ``per_class`` per class (seed 0; all of a class that
    has fewer), then the variant.

    Cached in memory: pools are rebuilt from the datasets, which takes seconds, and shared by many tasks.
    """
    task = loaders.animal_mnist_split()[1] if dataset == "animal_mnist_heldout" else loaders.load_dataset(dataset)
    if per_class:
        task = datasets.sample_episode(task, task.num_classes, per_class, 0, at_most=True)
    return task if variant == "none" else datasets.variant(task, variant)


@dataclass
class TaskPart:
    """The images of one part (training or held-out) of a task: a pool and indices into it, with 0..C-1 labels."""

    name: str  # "<task id>-<spec hash>/train" or ".../test"
    pool: datasets.Task
    indices: np.ndarray  # int64 pool indices, grouped by class
    labels: np.ndarray  # int64 task labels: position of the pool class in the task's sorted class list
    class_names: tuple[str, ...]

    @property
    def task(self) -> datasets.Task:
        """The part as a Task of its own, with a cache-safe id (what fine-tuning feeds the model)."""
        return datasets.Task(f"{self.pool.id}/{self.name}", self.labels, self.class_names,
                             images=None if self.pool.images is None else self.pool.images[self.indices],
                             paths=None if self.pool.paths is None else tuple(self.pool.paths[i] for i in self.indices))


def task_parts(spec: TaskSpec, config: BenchmarkConfig) -> tuple[TaskPart, TaskPart]:
    """The (training, held-out) parts of ``spec``: per class, ``n_train`` then ``n_test`` random pool images.

    With ``test_dataset`` the held-out part is every image of that dataset's pool of the task's classes.
    """
    train_pool = pool(spec.dataset, spec.variant, config.pool_per_class)
    test_pool = pool(spec.test_dataset, spec.variant, 0) if spec.test_dataset else train_pool
    if test_pool.class_names != train_pool.class_names:
        raise ValueError(f"task {spec.id}: the classes of {spec.test_dataset} differ from those of {spec.dataset}; "
                         "give both folders the same class sub-folders")
    classes = sorted(spec.classes) or list(range(train_pool.num_classes))
    rng = np.random.default_rng(spec.seed)
    train, test = [], []
    for c in classes:
        members = rng.permutation(np.flatnonzero(train_pool.labels == c))
        n_train = spec.n_train or (len(members) if spec.test_dataset else len(members) // 2)
        n_test = 0 if spec.test_dataset else spec.n_test or len(members) - n_train
        if n_train + n_test > len(members):
            raise ValueError(f"task {spec.id}: class {c} has {len(members)} pool images, fewer than "
                             f"n_train + n_test = {n_train + n_test}")
        train.append(np.sort(members[:n_train]))
        test.append(np.sort(members[n_train : n_train + n_test]) if not spec.test_dataset
                    else np.flatnonzero(test_pool.labels == c))

    # The spec's hash keeps part ids valid cache keys when benchmark.yaml changes a task under the same id.
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:8]

    def part(name: str, source: datasets.Task, chunks: list[np.ndarray]) -> TaskPart:
        idx = np.concatenate(chunks)
        names = tuple(source.class_names[c] for c in classes)
        return TaskPart(f"{spec.id}-{digest}/{name}", source, idx, np.searchsorted(classes, source.labels[idx]), names)

    return part("train", train_pool, train), part("test", test_pool, test)
