"""Calibration of rank.py's predicted accuracy: how often a held-out task's true fine-tuning gap to its best model
falls inside the stated 80% interval (``ranker.serve.pipeline.AccuracyGaps``), and how wide the intervals are.

Fixed split: the history of the benchmark's training tasks predicts its test tasks. ``--cv``: leave-one-group-out
over every task with fine-tuning ground truth, the history of the other groups predicting the held-out one (no
ranker is involved: the predictions come from the history of similar tasks alone). Summary vectors are the
benchmark's stats (the general encoder's, as rank.py computes them).

Run (the figures in docs/ranking.md, "Predicted accuracy"):
    python benchmarks/calibration.py --cv
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ranker import evaluate
from ranker.serve.pipeline import AccuracyGaps
from ranker.tasks import benchmark as bm


def coverage(bench: bm.Benchmark, history: list[str], held_out: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per (held-out task, measured model): inside the 80% interval (bool) and the interval's width (points)."""
    stats = bench.task_stats()
    _, _, past = bench.history.matrix("finetune", history, bench.models)
    group = {t.id: t.group_name for t in bench.config.tasks}
    gaps = AccuracyGaps(torch.stack([stats[t][1] for t in history]), torch.as_tensor(past),
                        ["finetune"] * len(history), [group[t] for t in history])
    inside, width = [], []
    for task in held_out:
        truth = bench.history.matrix("finetune", [task], bench.models)[2][0]
        truth = truth - np.nanmax(truth)
        _, low, high = (x.numpy() for x in gaps.predict(stats[task][1]))
        measured = np.isfinite(truth)
        inside.append(((low <= truth + 1e-9) & (truth <= high + 1e-9))[measured])
        width.append((high - low)[measured])
    return np.concatenate(inside), np.concatenate(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--cv", action="store_true", help="add leave-one-group-out cross-validation")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    rows = [("fixed split", *coverage(bench, bench.task_ids("train"), bench.task_ids("test")))]
    if args.cv:
        for fold in evaluate.folds(bench, evaluate.measured_tasks(bench)):
            rows.append((f"CV, {fold.group} held out", *coverage(bench, fold.train, fold.held_out)))
        rows.append(("CV, all folds", np.concatenate([r[1] for r in rows[1:]]),
                     np.concatenate([r[2] for r in rows[1:]])))
    print(f"80% intervals of the fine-tuning gap to the best model ({bench.config.name})")
    print("| held-out tasks | (task, model) pairs | inside the 80% interval | median width (points) |")
    print("|---|---|---|---|")
    for name, inside, width in rows:
        print(f"| {name} | {len(inside)} | {inside.mean():.1%} | {np.median(width):.1f} |")


if __name__ == "__main__":
    main()
