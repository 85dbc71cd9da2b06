"""Which list Ranker v2's prior term should start from: three constant lists from the same history, scored on the
fixed split's test tasks and leave-one-group-out over every task with fine-tuning ground truth.

- ``prior``: each model's mean fine-tuning accuracy on every training task (``ranker.evaluate.prior_means``), the
  floor every ranking is held to; ``Calibration.set_start`` puts exactly this order on a z scale;
- ``z mean``: the mean of each task's z-scored accuracies;
- ``prior, training episodes only``: the prior without the train config's validation tasks.

Prints mean weighted tau (rank=None) and top-1 regret, and each list's paired difference to the prior with a 95%
bootstrap interval over tasks. No training: a few seconds.

Run (docs/results.md names it beside the prior's start):
    python benchmarks/prior_variants.py --benchmark v2
"""

from __future__ import annotations

import argparse

import numpy as np

from ranker import evaluate
from ranker.evaluate import zscore_rows
from ranker.learn.config import load_run_config
from ranker.learn.metrics import top1_regret, weighted_tau
from ranker.tasks import benchmark as bm


def lists(bench: bm.Benchmark, train: list[str], val: list[str]) -> dict[str, np.ndarray]:
    """The three constant lists ``[M]`` from the training tasks ``train``."""
    _, _, gt = bench.history.matrix("finetune", train, bench.models)
    return {"prior": evaluate.prior_means(bench, train)[1], "z mean": np.nanmean(zscore_rows(gt), axis=0),
            "prior, training episodes only": evaluate.prior_means(bench, [t for t in train if t not in val])[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    val = load_run_config().data.val_tasks or bench.validation_tasks()
    ids = [t.id for t in bench.config.tasks]
    _, _, every = bench.history.matrix("finetune", ids, bench.models)
    truth = dict(zip(ids, every, strict=True))
    splits = {"fixed split": [(bench.task_ids("train"), bench.task_ids("test"))],
              "grouped CV": [(f.train, f.held_out) for f in evaluate.folds(bench, evaluate.measured_tasks(bench))]}
    print(f"constant lists on {bench.config.name}: weighted tau (rank=None), top-1 regret (points), and the paired "
          f"difference in tau to the prior (95% bootstrap over tasks)")
    print("| split | list | wtau | regret | Δ wtau vs prior |")
    print("|---|---|---|---|---|")
    for name, parts in splits.items():
        taus, regrets = {}, {}
        for train, held_out in parts:
            for label, scores in lists(bench, train, val).items():
                taus.setdefault(label, []).extend(weighted_tau(truth[t], scores) for t in held_out)
                regrets.setdefault(label, []).extend(top1_regret(truth[t], scores) for t in held_out)
        n = len(taus["prior"])
        picks = evaluate.bootstrap_picks(n)
        for label in taus:
            diff = np.array(taus[label]) - np.array(taus["prior"])
            low, high = evaluate.interval(diff, picks)
            delta = "" if label == "prior" else f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]"
            print(f"| {name} ({n}) | {label} | {np.mean(taus[label]):.3f} | {np.mean(regrets[label]):.2f} | {delta} |")


if __name__ == "__main__":
    main()
