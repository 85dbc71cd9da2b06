"""How far the re-ranking evidence can lift a ranking at k = M, fitted directly: the ceiling of Ranker v2's form.

Ranker v2 with every model embedded scores ``prior_m + w x z(LogME)`` plus Model Spider's shrunk term. Without the
network, the same form is fitted by least squares on the training tasks: one bias per model and one shared slope on
LogME z-scored within the task, against the task's fine-tuning accuracies z-scored within the task (M + 1
parameters). It is scored on the fixed split's test tasks and, leave-one-group-out, on every measured task, beside
the prior (each model's mean accuracy on the same training tasks) and LogME alone. The difference to the prior
gets a 95% bootstrap interval over tasks and, under CV, over whole groups (``ranker.evaluate.group_interval``).
If this fit cannot reach a bar, more training of the network on the same evidence will not either.

Run (the figures in docs/results.md, "Where it falls short"):
    python benchmarks/evidence_ceiling.py --benchmark v2
"""

from __future__ import annotations

import argparse

import numpy as np

from ranker import evaluate
from ranker.evaluate import zscore_rows
from ranker.learn.metrics import weighted_tau
from ranker.tasks import benchmark as bm


def fit(gt: np.ndarray, logme: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-model bias ``[M]``, slope) of least squares of z(gt) on one-hot model + z(LogME), over the finite
    ground-truth cells of the training rows ``gt`` ``[T, M]``."""
    t, m = np.nonzero(np.isfinite(gt))
    design = np.zeros((len(t), gt.shape[1] + 1))
    design[np.arange(len(t)), m] = 1.0
    design[:, -1] = zscore_rows(logme)[t, m]
    weights = np.linalg.lstsq(design, zscore_rows(gt)[t, m], rcond=None)[0]
    return weights[:-1], float(weights[-1])


def split(gt: np.ndarray, logme: np.ndarray, train: list[int], held_out: list[int]) -> dict[str, np.ndarray]:
    """Per held-out task weighted tau (rank=None) of the prior, LogME and the fitted form."""
    bias, slope = fit(gt[train], logme[train])
    prior = np.nanmean(gt[train], axis=0)
    fitted = bias + slope * zscore_rows(logme[held_out])
    return {"prior": np.array([weighted_tau(gt[i], prior) for i in held_out]),
            "logme": np.array([weighted_tau(gt[i], logme[i]) for i in held_out]),
            "fitted": np.array([weighted_tau(gt[i], s) for i, s in zip(held_out, fitted, strict=True)])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    ids = [t.id for t in bench.config.tasks]
    row = {t: i for i, t in enumerate(ids)}
    _, _, gt = bench.history.matrix("finetune", ids, bench.models)
    _, _, logme = bench.history.matrix("logme", ids, bench.models)
    rows = {"fixed split": split(gt, logme, [row[t] for t in bench.task_ids("train")],
                                 [row[t] for t in bench.task_ids("test")])}
    folds = evaluate.folds(bench, evaluate.measured_tasks(bench))
    parts = [split(gt, logme, [row[t] for t in f.train], [row[t] for t in f.held_out]) for f in folds]
    rows["grouped CV"] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    groups = {f.group: f.held_out for f in folds}
    held = [t for f in folds for t in f.held_out]
    print(f"mean weighted tau (rank=None) on {bench.config.name}: prior_m + w x z(LogME), least squares on the "
          "training tasks")
    print("| split | prior | LogME | fitted | fitted - prior [tasks] | fitted - prior [groups] | fitted - LogME |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        diff = r["fitted"] - r["prior"]
        lo, hi = evaluate.interval(diff, evaluate.bootstrap_picks(len(diff)))
        by_group = ""
        if name == "grouped CV":
            _, (glo, ghi) = evaluate.group_interval(dict(zip(held, diff, strict=True)), groups)
            by_group = f"{diff.mean():+.3f} [{glo:+.3f}, {ghi:+.3f}]"
        print(f"| {name} ({len(diff)}) | {r['prior'].mean():.3f} | {r['logme'].mean():.3f} | "
              f"{r['fitted'].mean():.3f} | {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {by_group} | "
              f"{(r['fitted'] - r['logme']).mean():+.3f} |")


if __name__ == "__main__":
    main()
