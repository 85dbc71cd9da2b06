"""What was tried to make the ranker better, judged on the validation tasks only (never the test tasks).

Each variant of the default training config is trained with seeds 0-2 (``python train.py`` in a subprocess, into a
temporary folder); its export is scored on ``data.val_tasks`` against their fine-tuning ground truth: mean
weighted tau (rank=None) without re-ranking and re-ranked at the k the run chose. Last, the default run (seed 0) is
blended with the prior (z-scored scores + weight x z-scored mean fine-tuning accuracy on the other training tasks).

Run:
    python benchmarks/ranker_val_sweep.py          # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ranker.learn import lit
from ranker.learn.config import load_run_config
from ranker.learn.metrics import weighted_tau
from ranker.serve import export
from ranker.tasks import benchmark as bm

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "defaults (ListMLE, Adam 2.5e-4 cosine, 300 epochs, width 64)": [],
    "targets: linear probe instead of fine-tuning": ["data.target_kinds=[linear_probe]"],
    "lr 1e-3": ["optim.lr=1e-3"],
    "600 epochs": ["trainer.max_epochs=600"],
    "width 128": ["model.dim=128"],
    "top-weighted ListMLE": ["optim.loss=top_weighted_listmle"],
    "ListNet": ["optim.loss=listnet"],
}
SEEDS = (0, 1, 2)
PRIOR_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def mean_tau(targets: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean([weighted_tau(g, s) for g, s in zip(targets, scores, strict=True)]))


def main() -> None:
    cfg = load_run_config()
    bench = bm.load_benchmark(cfg.data.benchmark)
    batch = lit.collate(lit.load_episodes(bench, cfg.data.val_tasks, ["finetune"]))
    targets = batch["target"].numpy()
    others = [t for t in bench.task_ids("train") if t not in cfg.data.val_tasks]
    prior = np.nanmean(bench.history.matrix("finetune", others, bench.models)[2], axis=0)
    prior_tau = mean_tau(targets, np.tile(prior, (len(targets), 1)))
    print(f"prior (mean fine-tuning accuracy on the other training tasks): val wtau {prior_tau:.3f}")
    print("| change | val wtau, plain | val wtau, re-ranked (k chosen per run) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, overrides) in enumerate(VARIANTS.items()):
            plain, reranked = [], []
            for seed in SEEDS:
                name = f"v{i}-s{seed}"
                subprocess.run([sys.executable, "train.py", f"out_dir={tmp}/runs", f"export_dir={tmp}/ckpt",
                                f"name={name}", f"seed={seed}", *overrides], cwd=ROOT, check=True,
                               capture_output=True)
                net = export.load(Path(tmp) / "ckpt" / name)
                for k, out in ((0, plain), (net.config.rerank_k, reranked)):
                    out.append(mean_tau(targets, net.net.rerank(batch["prototypes"], batch["class_mask"],
                                                                batch["specific"], k).numpy()))
            print(f"| {label} | {np.mean(plain):.3f} | {np.mean(reranked):.3f} |", flush=True)
        default = export.load(Path(tmp) / "ckpt" / "v0-s0")
        z_prior = (prior - prior.mean()) / prior.std()
        for k in (0, default.config.rerank_k):
            scores = default.net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k).numpy()
            z = (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True)
            blends = " ".join(f"{w}: {mean_tau(targets, z + w * z_prior):.3f}" for w in PRIOR_WEIGHTS)
            print(f"default run (seed 0), k={k}: alone {mean_tau(targets, z):.3f}; blended with the prior, by "
                  f"prior weight: {blends}")


if __name__ == "__main__":
    main()
