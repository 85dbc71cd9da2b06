"""Trains the learned ranker on a benchmark's history and exports it to checkpoints/<name>/.

Config: the dataclasses of ranker/learn/config.py, then ranker/configs/train/default.yaml, then ``key=value``
overrides. The resolved config is saved as runs/<name>/config.yaml; Lightning checkpoints (``last.ckpt``, written
every epoch, to resume; ``best.ckpt`` by validation weighted tau) and CSV logs go beside it. After fitting, the best
checkpoint is reloaded, the re-ranking depth k (and a calibrated ranker's Model Spider factor, by grouped
cross-validation inside the training tasks: one more training per task group) is chosen, and checkpoints/<name>/ is
written. An existing run or export folder of the same name is never touched unless ``overwrite=true`` or
``ckpt_path`` resumes that run (and so replaces its export); the shipped checkpoints/v3-default is only
rewritten by ``name=v3-default overwrite=true``.

Examples:
    python train.py                                      # the default benchmark (v3), CPU, minutes
    python train.py name=small trainer.max_epochs=3 model.dim=128 optim.loss=listnet
    python train.py ckpt_path=runs/v3/checkpoints/last.ckpt         # resume the default run
    python train.py ranker=fennec name=v3-fennec          # Fennec (ranker/learn/fennec.py), seconds; rank.py
                                                         # --checkpoint checkpoints/v3-fennec ranks with it
    python train.py data.benchmark=offline name=mine     # another benchmark: offline, v2 or your own folder
    srun python train.py trainer.devices=4 trainer.num_nodes=2 trainer.strategy=ddp   # docs/training.md (SLURM)
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf.errors import OmegaConfBaseException

from ranker.files import exit_with
from ranker.learn import rankers
from ranker.learn.config import DEFAULT_TRAIN_CONFIG, RunConfig, load_run_config
from ranker.learn.episodes import EpisodeDataModule
from ranker.learn.protocol import Fitted
from ranker.serve import export
from ranker.zoo.manifest import load_manifest


def check_folders(cfg: RunConfig) -> None:
    """Refuses, before anything is written, to reuse a run folder or replace an export that was not asked for.

    Resuming (``ckpt_path``) continues the run of that name, so its folder is reused and its export replaced.

    Raises:
        ValueError: the run or the export folder exists, without ``overwrite=true`` or ``ckpt_path``; or
            ``ckpt_path`` is not a file.
    """
    run_dir, export_dir = Path(cfg.out_dir) / cfg.name, Path(cfg.export_dir) / cfg.name
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ValueError(f"ckpt_path {cfg.ckpt_path} is not a file; pass runs/<name>/checkpoints/last.ckpt of a run")
    if cfg.overwrite or cfg.ckpt_path is not None:
        return
    if run_dir.exists():
        raise ValueError(f"run folder {run_dir} exists; resume it with ckpt_path={run_dir}/checkpoints/last.ckpt, "
                         "pick another name=, or pass overwrite=true to start it again")
    if export_dir.exists():
        raise ValueError(f"export folder {export_dir} exists; pick another name=, or pass overwrite=true to "
                         "replace it")


def history_summary(data: EpisodeDataModule) -> tuple[str, str]:
    """(one line on the history the run trains on: tasks, groups, ground-truth kinds, LogME evidence; a warning, or
    "", when no task has LogME: re-ranking then has no evidence to weigh)."""
    episodes = data.train_episodes + data.val_episodes
    groups = {t.id: t.group_name for t in data.bench.config.tasks}
    kinds = Counter(e.kind for e in episodes)
    with_logme = sum(bool(torch.isfinite(e.evidence).any()) for e in episodes)
    chosen = ("data.val_tasks" if data.cfg.val_tasks else "its benchmark.yaml's val_tasks"
              if data.bench.config.val_tasks else "the last training task of its largest groups")
    line = (f"history: {len(episodes)} tasks ({len(data.train_episodes)} training, {len(data.val_episodes)} "
            f"validation: {chosen}) in {len({groups[e.task] for e in episodes})} groups; ground truth "
            + ", ".join(f"{kind} on {n}" for kind, n in kinds.items()) + f"; logme evidence on {with_logme}")
    warning = "" if with_logme else (
        f"warning: no task of benchmark {data.bench.argument} has logme history, so re-ranking (k > 0) has no "
        f"evidence to weigh; build it first: python -m data.build_history --benchmark {data.bench.argument} "
        "--kind logme")
    return line, warning


def prior_only(fitted: Fitted, n_tasks: int) -> str:
    """One line when the fit chose k=0 and spider factor 0, which leaves the ranker its prior term alone, else ""."""
    if fitted.rerank_k or fitted.spider_factor:
        return ""
    return (f"with k=0 and spider_factor 0 this checkpoint ranks by its prior term alone (each model's mean "
            f"accuracy): its {n_tasks} tasks gave nothing the fit could use beyond the prior; history in more "
            "groups, and logme on it, is what lets a ranker learn more")


def fit(cfg: RunConfig, data: EpisodeDataModule) -> Path:
    """Fits the run's ranker (``rankers.get(cfg.ranker).fit``: it also chooses k, by grouped cross-validation
    inside the training tasks where it can), exports; returns the export folder."""
    start = time.perf_counter()
    fitted = rankers.get(cfg.ranker).fit(cfg, data)
    if fitted is None:  # a DDP process other than rank 0: rank 0 exports
        return Path(cfg.export_dir) / cfg.name
    bench = data.bench
    config = export.ExportConfig(dims=data.dims, models=bench.models, general_encoder=bench.config.general_encoder,
                                 general_encoder_sha256=bench.entries[bench.config.general_encoder].weights_sha256,
                                 rerank_k=fitted.rerank_k, spider_factor=fitted.spider_factor,
                                 run=cfg)
    history = data.train_episodes + data.val_episodes
    stats = bench.task_stats()
    groups = {t.id: t.group_name for t in bench.config.tasks}
    folder = export.export(
        Path(cfg.export_dir) / cfg.name, fitted.net, config, load_manifest(bench.manifest_path),
        [e.task for e in history], [e.kind for e in history], [groups[e.task] for e in history],
        torch.stack([stats[e.task][1] for e in history]),
        torch.stack([e.target for e in history]))
    print(f"{fitted.report}; exported {folder} in {time.perf_counter() - start:.0f} s")
    if note := prior_only(fitted, len(history)):
        print(note)
    print(f"next: python rank.py --checkpoint {folder} --data <folder of labelled images>")
    return folder


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.rstrip() + "\n\nFields, each with a comment: ranker/learn/config.py; defaults: "
              "ranker/configs/train/default.yaml.")
        return 0
    try:
        cfg = load_run_config(DEFAULT_TRAIN_CONFIG, argv)
        rankers.get(cfg.ranker)  # an unknown ranker fails here, before any folder or data
        if rank_zero_only.rank == 0:  # the folders of DDP's other processes are rank 0's, made on purpose
            check_folders(cfg)
        data = EpisodeDataModule(cfg)
        data.setup()
    except OmegaConfBaseException as err:  # unknown key, or a value of the wrong type
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        print(f"train: config {where}{str(err).splitlines()[0]} (fields: ranker/learn/config.py)", file=sys.stderr)
        return 2
    except ValueError as err:  # unknown benchmark, task or loss, missing history, folders in the way
        print(f"train: {err}", file=sys.stderr)
        return 2
    if rank_zero_only.rank == 0:
        line, warning = history_summary(data)
        print(line)
        if warning:
            print(f"train: {warning}", file=sys.stderr)
    fit(cfg, data)
    return 0


def cli() -> None:
    """``python train.py`` and the ``ptm-train`` command: exits with main's status."""
    exit_with(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
