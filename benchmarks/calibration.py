"""Calibration of rank.py's predicted accuracy: how often a held-out task's true fine-tuning gap to its best model
falls inside the stated 80% interval at each place of a ranking (``ranker.serve.pipeline.PositionGaps``), and how
wide the intervals are.

The history (``PositionGaps`` of its fine-tuning rows and groups) states, for each place of a ranking, a gap and an
interval; a held-out task is ranked, and the true gap of the model at each place is compared with what that place
states. Fixed split: the benchmark's training tasks are the history and its test tasks are held out, ranked both by
the prior of the history and by the shipped checkpoint (at its k, re-ranked from the benchmark's own features, as
``ranker.evaluate`` scores it). ``--cv``: leave-one-group-out over every task with fine-tuning ground truth, the other
groups the history and the held-out group ranked by their prior (no ranker is retrained). By construction the gaps
fall down the ranking, so a row never promises more than the rows above it.

Run (the figures in docs/ranking.md, "Predicted accuracy"):
    python benchmarks/calibration.py --cv                      # v3, the default benchmark
    python benchmarks/calibration.py --benchmark offline --checkpoint checkpoints/offline-default --cv
    python benchmarks/calibration.py --benchmark v2 --checkpoint checkpoints/v2-default --cv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ranker import evaluate
from ranker.serve import export
from ranker.serve.pipeline import PositionGaps
from ranker.tasks import benchmark as bm


def coverage(bench: bm.Benchmark, history: list[str], scores: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per (held-out task, measured model): inside the 80% interval of its place (bool), the interval's width
    (points); and the quantile level the history chose. ``scores``: held-out task -> scores ``[M]`` that rank it."""
    _, _, past = bench.history.matrix("finetune", history, bench.models)
    group = {t.id: t.group_name for t in bench.config.tasks}
    gaps = PositionGaps(torch.as_tensor(past), ["finetune"] * len(history), [group[t] for t in history])
    _, low, high = gaps.predict(len(bench.models))
    inside, width = [], []
    for task, score in scores.items():
        truth = bench.history.matrix("finetune", [task], bench.models)[2][0]
        placed = (truth - np.nanmax(truth))[np.argsort(-score, kind="stable")]
        measured = np.isfinite(placed)
        inside.append(((low - 1e-9 <= placed) & (placed <= high + 1e-9))[measured])
        width.append((high - low)[measured])
    return np.concatenate(inside), np.concatenate(width), gaps.level


def prior_scores(bench: bm.Benchmark, history: list[str], held_out: list[str]) -> dict[str, np.ndarray]:
    """Each held-out task scored by the prior of ``history`` (the same list for every task)."""
    prior = evaluate.prior_means(bench, history)[1]
    return dict.fromkeys(held_out, prior)


def checkpoint_scores(bench: bm.Benchmark, checkpoint: Path, held_out: list[str]) -> dict[str, np.ndarray]:
    """Each held-out task scored by the exported ranker at its k, from the benchmark's stats and LogME history."""
    exported = export.load(checkpoint, bench.manifest_path)
    scores = evaluate.ranker_scores(bench, exported.net, held_out, exported.config.rerank_k)
    return dict(zip(held_out, scores, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--checkpoint", type=Path, help="the ranker whose fixed-split rankings are checked "
                        "(default: checkpoints/<benchmark>-default)")
    parser.add_argument("--cv", action="store_true", help="add leave-one-group-out cross-validation")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    checkpoint = args.checkpoint or export.benchmark_checkpoint(bench.config.name)
    train, test = bench.task_ids("train"), evaluate.measured_tasks(bench, bench.task_ids("test"))
    rows = [("fixed split, ranked by the prior", *coverage(bench, train, prior_scores(bench, train, test))),
            (f"fixed split, ranked by {checkpoint.name}",
             *coverage(bench, train, checkpoint_scores(bench, checkpoint, test)))]
    if args.cv:
        folds = [(f"CV, {fold.group} held out", *coverage(bench, fold.train, prior_scores(bench, fold.train,
                                                                                            fold.held_out)))
                 for fold in evaluate.folds(bench, evaluate.measured_tasks(bench))]
        rows += folds + [("CV, all folds", np.concatenate([r[1] for r in folds]),
                          np.concatenate([r[2] for r in folds]), float("nan"))]
    print(f"80% intervals of the fine-tuning gap to the best model, by place in the ranking ({bench.config.name})")
    print("| held-out tasks | (task, model) pairs | inside the 80% interval | median width (points) | level |")
    print("|---|---|---|---|---|")
    for name, inside, width, level in rows:
        print(f"| {name} | {len(inside)} | {inside.mean():.1%} | {np.median(width):.1f} | "
              f"{'' if np.isnan(level) else f'{level:g}'} |")


if __name__ == "__main__":
    main()
