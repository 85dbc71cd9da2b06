"""The training run's one typed config: dataclasses merged as structured defaults + YAML + dotlist.

``python train.py trainer.max_epochs=3 model.dim=128`` overrides fields by their dotted path; an unknown key
or a value of the wrong type is an error. The resolved config is saved beside every run as ``config.yaml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ranker.learn import losses
from ranker.learn.modelspider import ModelConfig
from ranker.tasks.benchmark import DEFAULT_BENCHMARK

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_TRAIN_CONFIG = CONFIGS_DIR / "train" / "default.yaml"


@dataclass
class DataConfig:
    """Which history becomes episodes, and how."""

    benchmark: str = DEFAULT_BENCHMARK  # name under data/benchmarks/ or a folder with a benchmark.yaml
    target_kinds: list[str] = field(default_factory=lambda: ["finetune", "linear_probe", "proxy"])  # per task,
    # the first kind with ground truth for at least two models is its target vector (others are not mixed in)
    val_tasks: list[str] = field(default_factory=list)  # training-role tasks held out for validation; empty: the
    # benchmark's own (its benchmark.yaml val_tasks, else drawn: Benchmark.validation_tasks)
    batch_size: int = 16  # episodes (tasks) per step


@dataclass
class OptimConfig:
    """Adam with cosine decay (Model Spider's recipe)."""

    loss: str = "listmle"  # a name in ranker.learn.losses.LOSSES
    lr: float = 2.5e-4  # peak learning rate
    weight_decay: float = 0.0  # Adam's L2 weight decay
    calibration_lr: float = 3e-3  # peak learning rate of a calibrated ranker's prior, scale and evidence weight:
    # a handful of scalars that the network's rate would leave near their start
    specific_prob: float = 1.0  # chance that an episode gets PTM-specific tokens for k ~ U[0, M] random models


@dataclass
class TrainerConfig:
    """What is handed to ``lightning.Trainer`` (multi-GPU and multi-node DDP by these fields alone)."""

    max_epochs: int = 300  # passes over the training episodes
    accelerator: str = "auto"  # cpu, gpu or auto
    devices: str = "auto"  # "auto", a count such as "4", or a list such as "[0,1]"
    num_nodes: int = 1  # machines; under SLURM, srun starts devices x num_nodes processes
    strategy: str = "auto"  # "auto", or "ddp" for several devices
    precision: str = "32-true"  # Lightning precision flag
    log_every_n_steps: int = 10  # CSVLogger row frequency
    check_val_every_n_epoch: int = 5  # validation frequency (checkpoints follow it)


@dataclass
class RecallConfig:
    """rank.py's candidate recall for a zoo larger than ``size`` (smaller zoos are scored whole)."""

    tasks: int = 5  # nearest historical tasks (FAISS, cosine of summary vectors) whose best models are recalled
    per_task: int = 5  # best models taken from each of those tasks
    size: int = 100  # candidates in all: a maximum-inner-product search over model tokens fills up to here


@dataclass
class FennecConfig:
    """Fennec's shape and optimizer (``ranker=fennec``; ``ranker.learn.fennec``): its loss is ``optim.loss`` and its
    epoch budget ``trainer.max_epochs``; full-batch Adam on the CPU."""

    latent: int = 16  # width of the shared model/task space
    model_side: str = "both"  # "both": free part + map of archi2vec; "free" or "archi" alone (the ablations)
    lr: float = 1e-3  # Adam's peak learning rate, chosen on the offline benchmark's validation tasks
    weight_decay: float = 1e-4  # Adam's L2 weight decay
    patience: int = 50  # epochs without a better val wtau before training stops


@dataclass
class RunConfig:
    """A whole training run."""

    name: str = DEFAULT_BENCHMARK  # run name: folder under out_dir and the exported checkpoint's name
    seed: int = 0  # seed_everything: weights, episode order, specific-token draws
    out_dir: str = "runs"  # run folders (logs, Lightning checkpoints, resolved config) go under here
    export_dir: str = "checkpoints"  # the exported folder goes to <export_dir>/<name>
    ckpt_path: str | None = None  # a Lightning .ckpt to resume training from (its run folder is reused)
    overwrite: bool = False  # replace an existing run folder and export folder of this name (else: refused)
    ranker: str = "modelspider"  # a name in ranker.learn.rankers.RANKERS: "modelspider" (Ranker v2) or "fennec"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fennec: FennecConfig = field(default_factory=FennecConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)  # exported with the ranker; rank.py reads it


def load_run_config(yaml_path: str | Path | None = DEFAULT_TRAIN_CONFIG, overrides: list[str] | None = None
                    ) -> RunConfig:
    """Structured defaults, then the YAML file (if any), then ``key=value`` overrides; type-checked.

    Raises:
        omegaconf.errors.OmegaConfBaseException: an unknown key, or a value of the wrong type.
        ValueError: a value outside its range or choices (epoch counts below 1, the loss name); the ranker's name
            is checked by ``ranker.learn.rankers.get``.
    """
    merged = OmegaConf.structured(RunConfig)
    if yaml_path is not None:
        merged = OmegaConf.merge(merged, OmegaConf.load(yaml_path))
    merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides or [])))
    cfg = OmegaConf.to_object(merged)
    for name in ("max_epochs", "check_val_every_n_epoch"):
        if getattr(cfg.trainer, name) < 1:
            raise ValueError(f"trainer.{name}={getattr(cfg.trainer, name)}: it counts epochs, give 1 or more")
    losses.get(cfg.optim.loss)  # an unknown loss name fails here, before any data loads
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (what is saved beside a run and inside an export)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def learning_yaml(cfg: RunConfig) -> str:
    """``to_yaml`` of ``cfg`` with the fields that say where its run is written or resumed from blanked (``name``,
    ``out_dir``, ``export_dir``, ``ckpt_path``, ``overwrite``): the same for two runs that learn the same, which
    makes it a cache key of what a fit learns."""
    anonymous = copy.deepcopy(cfg)
    anonymous.name = anonymous.out_dir = anonymous.export_dir = ""
    anonymous.ckpt_path, anonymous.overwrite = None, False
    return to_yaml(anonymous)
