"""A self-contained exported ranker: one folder that rank.py and evaluate load without Lightning or pickle.

``checkpoints/<name>/`` holds
- ``model.safetensors``: the ranker's weights (of the kind the run config's ``ranker`` names in
  ``ranker.learn.rankers``);
- ``config.yaml``: the resolved training config, the ranker's shape, the zoo's model order, the general
  encoder's name and weight hash, and the re-ranking depth (and spider_factor) its fit chose;
- ``zoo.yaml``: the zoo manifest it was trained on, with every member's weight hash;
- ``tasks.safetensors``: the historical (training-role) tasks' summary vectors ``[T, 2D]`` and ground-truth
  rows ``[T, M]`` (what recall over earlier tasks needs); task ids, kinds and groups in its metadata;
- ``tasks.faiss``: a cosine ``ranker.serve.index.VectorIndex`` over those summary vectors, rows in the same order;
- ``archi2vec.safetensors``: every zoo member's architecture vector ``[M, F]`` (``ranker.zoo.archi2vec``, zoo
  order; the slot names in its metadata), what a model without history is placed by.

Loading compares the zoo given (the manifest rank.py will load models from) with ``zoo.yaml`` by name and weight
hash, in order, and refuses a mismatch: the model tokens only mean something for the models they were trained on.
The one difference allowed is new members after the trained ones: they are *cold*, placed by their architecture
vectors (the ranker's ``with_cold_models``) with nothing retrained, and ``Exported.cold`` names them.

Example:
    >>> exported = load("checkpoints/v3-default")
    >>> exported.net(prototypes[None], torch.ones(1, len(prototypes), dtype=torch.bool))  # [1, M] scores
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ranker.files import umask_mode
from ranker.learn import rankers
from ranker.learn.config import RunConfig
from ranker.learn.modelspider import RankerDims
from ranker.learn.protocol import LearnedRanker
from ranker.serve.index import VectorIndex
from ranker.tasks.benchmark import DEFAULT_BENCHMARK
from ranker.zoo.archi2vec import FEATURES as ARCHI2VEC_FEATURES
from ranker.zoo.archi2vec import archi2vec
from ranker.zoo.manifest import REPO_ROOT, Manifest, load_manifest


def benchmark_checkpoint(benchmark: str) -> Path:
    """``checkpoints/<benchmark>-default``: the checkpoint shipped for the benchmark of that config name, the one
    the evaluation tools score when given none."""
    return REPO_ROOT / "checkpoints" / f"{benchmark}-default"


DEFAULT_CHECKPOINT = benchmark_checkpoint(DEFAULT_BENCHMARK)
FILES = ("model.safetensors", "config.yaml", "zoo.yaml", "tasks.safetensors", "tasks.faiss", "archi2vec.safetensors")


class ExportError(ValueError):
    """An exported folder that cannot be used as asked: missing files, or trained on another zoo."""


@dataclass
class ExportConfig:
    """``config.yaml`` of an exported folder."""

    dims: RankerDims  # the ranker's shape
    models: list[str] = field(default_factory=list)  # zoo order of the model tokens and of every score vector
    general_encoder: str = ""  # zoo member whose features make the task tokens
    general_encoder_sha256: str = ""  # its weight hash, so task tokens come from the same weights
    rerank_k: int = 0  # how many top models get PTM-specific tokens, chosen inside the training tasks (its fit)
    spider_factor: float = 1.0  # the factor chosen on Model Spider's learned scale (already in the weights), so a
    # retraining with this run config (benchmarks/cold_start.py) can apply the same
    run: RunConfig = field(default_factory=RunConfig)  # the resolved training config


@dataclass
class Exported:
    """A loaded export."""

    net: LearnedRanker  # in eval mode, of the class rankers.get(config.run.ranker)
    config: ExportConfig
    zoo: Manifest  # the zoo given to ``load`` (the trained one, plus any cold members)
    manifest: Path  # the file ``zoo`` was read from: where the members' weights are found
    task_ids: list[str]  # historical tasks, rows of ``summary`` and ``performance``
    task_kinds: list[str]  # history kind of each performance row
    task_groups: list[str]  # benchmark group of each historical task
    summary: torch.Tensor  # [T, 2D] general-encoder summary vectors
    performance: torch.Tensor  # [T, M] ground truth, NaN where unmeasured
    index: VectorIndex  # cosine index over ``summary``
    archi2vec: torch.Tensor  # [M, F] architecture vectors of the zoo, in zoo order
    cold: list[str] = field(default_factory=list)  # members the ranker never trained on (the zoo's last ones)


def export(folder: str | Path, net: LearnedRanker, config: ExportConfig, zoo: Manifest, task_ids: list[str],
           task_kinds: list[str], task_groups: list[str], summary: torch.Tensor, performance: torch.Tensor) -> Path:
    """Writes the folder atomically (a temporary sibling renamed into place, replacing an older export)."""
    folder = Path(folder)
    if [m.name for m in zoo.models] != config.models:
        raise ExportError("the zoo's model order differs from the config's; export the zoo the ranker was built for")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, tmp / "model.safetensors")
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    (tmp / "zoo.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(zoo)))
    meta = {"task_ids": json.dumps(task_ids), "task_kinds": json.dumps(task_kinds),
            "task_groups": json.dumps(task_groups)}
    save_file({"summary": summary.float().contiguous(), "performance": performance.float().contiguous()},
              tmp / "tasks.safetensors", metadata=meta)
    VectorIndex.build(summary, cosine=True).save(tmp / "tasks.faiss")
    save_file({"vectors": torch.stack([archi2vec(m) for m in zoo.models])}, tmp / "archi2vec.safetensors",
              metadata={"features": json.dumps(list(ARCHI2VEC_FEATURES))})
    for path in tmp.iterdir():  # mkdtemp and safetensors write owner-only; an export is shared like any other file
        os.chmod(path, umask_mode())
    os.chmod(tmp, umask_mode(directory=True))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _zoo_mismatch(trained: Manifest, given: Manifest) -> str:
    """Empty when both zoos list the same models, in the same order, with the same weight hashes."""
    a = [(m.name, m.weights_sha256) for m in trained.models]
    b = [(m.name, m.weights_sha256) for m in given.models]
    if a == b:
        return ""
    names_a, names_b = [n for n, _ in a], [n for n, _ in b]
    problems = []
    if set(names_a) - set(names_b):
        problems.append(f"missing from the given zoo: {sorted(set(names_a) - set(names_b))}")
    if set(names_b) - set(names_a):
        problems.append(f"not in the trained zoo: {sorted(set(names_b) - set(names_a))}")
    changed = sorted(n for n, h in a if n in names_b and dict(b)[n] != h)
    if changed:
        problems.append(f"other weights: {changed}")
    return "; ".join(problems) or "the same models in another order"


def load(folder: str | Path = DEFAULT_CHECKPOINT, manifest: str | Path | None = None) -> Exported:
    """Loads an exported folder for the zoo in ``manifest`` (None: the folder's own ``zoo.yaml``, the zoo it was
    trained on; a manifest that extends that zoo adds members cold).

    Raises:
        ExportError: a file is missing, or the checkpoint was trained on another zoo.
    """
    folder = Path(folder)
    absent = [f for f in FILES if not (folder / f).is_file()]
    if absent:
        raise ExportError(f"{folder} is not an exported ranker (missing {absent}); pass a folder written by train.py")
    config: ExportConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(ExportConfig), OmegaConf.load(folder / "config.yaml")))
    manifest = Path(folder / "zoo.yaml" if manifest is None else manifest)
    trained = load_manifest(folder / "zoo.yaml")
    given = load_manifest(manifest)
    known = [(m.name, m.weights_sha256) for m in trained.models]
    cold = given.models[len(known):] if [(m.name, m.weights_sha256) for m in given.models[: len(known)]] == known \
        else []
    mismatch = "" if cold else _zoo_mismatch(trained, given)
    if mismatch:
        raise ExportError(f"checkpoint {folder} was trained on zoo {trained.name!r}, not on the zoo in {manifest} "
                          f"({mismatch}); pass a checkpoint trained on this zoo, or train one with train.py")
    try:
        kind = rankers.get(config.run.ranker)
    except ValueError as err:
        raise ExportError(f"{folder}: {err}") from None
    net = kind.load(load_file(folder / "model.safetensors"), config.dims, config.run)
    with safe_open(folder / "tasks.safetensors", "pt") as f:
        meta = f.metadata()
        summary, performance = f.get_tensor("summary"), f.get_tensor("performance")
    index = VectorIndex.load(folder / "tasks.faiss")
    if index.size != len(summary):
        raise ExportError(f"{folder}/tasks.faiss indexes {index.size} tasks, tasks.safetensors holds {len(summary)}; "
                          "export the folder again with train.py")
    vectors = load_file(folder / "archi2vec.safetensors")["vectors"]
    if cold:
        new = torch.stack([archi2vec(m) for m in cold])
        net = net.with_cold_models(vectors, new, [m.feature_dim for m in cold])
        config.models, config.dims = config.models + [m.name for m in cold], net.dims
        vectors = torch.cat([vectors, new])
        performance = torch.cat([performance, torch.full((len(performance), len(cold)), float("nan"))], 1)
    return Exported(net, config, given, manifest, json.loads(meta["task_ids"]), json.loads(meta["task_kinds"]),
                    json.loads(meta["task_groups"]), summary, performance, index, vectors, [m.name for m in cold])
