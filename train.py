"""Trains the learned ranker on a benchmark's history and exports it to checkpoints/<name>/.

Config: the dataclasses of ranker/learn/config.py, then ranker/configs/train/default.yaml, then ``key=value``
overrides. The resolved config is saved as runs/<name>/config.yaml; Lightning checkpoints (for resuming) and
CSV logs go beside it. After fitting, the best checkpoint by validation weighted tau is reloaded, the
re-ranking depth k is chosen on the validation tasks, and the export folder is written.

Examples:
    python train.py                                      # embedded benchmark, CPU, a few minutes
    python train.py trainer.max_epochs=3 model.dim=128
    python train.py ckpt_path=runs/offline-default/checkpoints/last.ckpt    # resume
    srun python train.py trainer.devices=4 trainer.num_nodes=2 trainer.strategy=ddp   # see README (SLURM)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf.errors import OmegaConfBaseException

from ranker.learn.config import DEFAULT_TRAIN_CONFIG, RunConfig, load_run_config, to_yaml
from ranker.learn.lit import EpisodeDataModule, RankerModule, rerank_sweep
from ranker.serve import export
from ranker.zoo.manifest import load_manifest


def fit(cfg: RunConfig, data: EpisodeDataModule) -> Path:
    """Trains, picks k on the validation tasks, exports; returns the export folder."""
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    module = RankerModule(cfg, data.dims)
    run_dir = Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/wtau", mode="max",
                           save_last=True)
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
        logger=CSVLogger(run_dir, name="logs"), callbacks=[best], log_every_n_steps=cfg.trainer.log_every_n_steps,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch, default_root_dir=run_dir,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=cfg.ckpt_path)
    if not trainer.is_global_zero:
        return Path(cfg.export_dir) / cfg.name
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    net = module.net.cpu()
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    sweep = rerank_sweep(net, data.val_episodes)
    k = max(range(len(sweep)), key=lambda i: (round(sweep[i], 6), -i))  # best validation tau; ties: smaller k
    bench = data.bench
    config = export.ExportConfig(dims=data.dims, models=bench.models, general_encoder=bench.config.general_encoder,
                                 general_encoder_sha256=bench.entries[bench.config.general_encoder].weights_sha256,
                                 rerank_k=k, run=cfg)
    history = data.train_episodes + data.val_episodes
    stats = bench.task_stats()
    folder = export.export(
        Path(cfg.export_dir) / cfg.name, net, config, load_manifest(bench.manifest_path), [e.task for e in history],
        [e.kind for e in history], torch.stack([stats[e.task][1] for e in history]),
        torch.stack([e.target for e in history]))
    print(f"best val/wtau {float(best.best_model_score):.3f} ({best.best_model_path})")
    print("val wtau by re-ranking depth k: " + " ".join(f"{i}:{t:.3f}" for i, t in enumerate(sweep)))
    print(f"chose k={k}; exported {folder} in {time.perf_counter() - start:.0f} s")
    return folder


def main(argv: list[str]) -> int:
    try:
        cfg = load_run_config(DEFAULT_TRAIN_CONFIG, argv)
        data = EpisodeDataModule(cfg)
        data.setup()
    except OmegaConfBaseException as err:  # unknown key, or a value of the wrong type
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        print(f"train: config {where}{str(err).splitlines()[0]} (fields: ranker/learn/config.py)", file=sys.stderr)
        return 2
    except ValueError as err:  # unknown benchmark or task, missing history
        print(f"train: {err}", file=sys.stderr)
        return 2
    fit(cfg, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
