"""The cost-quality curve of the calibrated ranker: mean weighted tau (rank=None) against k, the number of models
that embed the task's data (k = 0: one general-encoder pass; k = M: LogME's cost), beside the prior and LogME over
all M models.

Fixed split: the shipped checkpoint on the benchmark's test tasks. ``--cv``: leave-one-group-out over every task
with fine-tuning ground truth, the ranker retrained per fold with the checkpoint's run config (as
``ranker.evaluate --cv`` does; its own k and Model Spider factor chosen inside the fold's training tasks). LogME
and the prior come from the history (kinds ``logme`` and ``finetune``), the ground truth is ``finetune``.
Prints a markdown table; ``--plot`` draws both curves.

Run (the figures in docs/results.md):
    python benchmarks/cost_quality.py --cv --plot benchmarks/cost_quality.png
    python benchmarks/cost_quality.py --seeds 3          # three training seeds, fixed split
    python benchmarks/cost_quality.py --benchmark v3 --cv --cv-cache data/benchmarks/v3/cv   # evaluate's inner fits
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ranker import evaluate
from ranker.evaluate import runs
from ranker.learn import episodes, rankers, selection
from ranker.learn.metrics import weighted_tau
from ranker.learn.modelspider import Ranker
from ranker.serve import export
from ranker.tasks import benchmark as bm


def curve(net: Ranker, bench: bm.Benchmark, tasks: list[str]) -> np.ndarray:
    """``[len(tasks), M + 1]`` weighted tau of each task at every re-ranking depth."""
    batch = episodes.collate(episodes.load_episodes(bench, tasks, ["finetune"]))
    out = np.zeros((len(tasks), batch["target"].shape[1] + 1))
    for k in range(out.shape[1]):
        scores = net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"])
        out[:, k] = [weighted_tau(g, s) for g, s in zip(batch["target"].numpy(), scores.numpy(), strict=True)]
    return out


def baselines(bench: bm.Benchmark, tasks: list[str], history: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-task weighted tau of the prior (mean fine-tuning accuracy over ``history``) and of LogME."""
    _, _, gt = bench.history.matrix("finetune", tasks, bench.models)
    _, _, logme = bench.history.matrix("logme", tasks, bench.models)
    prior = np.nanmean(bench.history.matrix("finetune", history, bench.models)[2], axis=0)
    return (np.array([weighted_tau(g, prior) for g in gt]),
            np.array([weighted_tau(g, s) for g, s in zip(gt, logme, strict=True)]))


Split = tuple  # (tau [T, M+1], prior [T], LogME [T], k as printed, k per task [T])


def cross_validated(exported: export.Exported, bench: bm.Benchmark, benchmark: str, cache: Path | None) -> Split:
    """The grouped-CV split: per fold the ranker retrained on the other groups (its own k), the prior and LogME.
    ``cache``: the folder of ``ranker.evaluate --cv --cv-cache``, whose kept inner fits of model selection the folds
    read back (and add to) while the code they ran is unchanged."""
    taus, priors, logmes, ks = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, \
            selection.shared_inner_fits(runs.inner_fits_folder(cache, tmp)):
        for i, fold in enumerate(evaluate.folds(bench, evaluate.measured_tasks(bench))):
            fitted = rankers.fit_again(exported.config.run, benchmark, tmp, f"fold{i}", fold.train)[0]
            taus.append(curve(fitted.net, bench, fold.held_out))
            prior, logme = baselines(bench, fold.held_out, fold.train)
            priors.append(prior)
            logmes.append(logme)
            ks.append(fitted.rerank_k)
    return (np.concatenate(taus), np.concatenate(priors), np.concatenate(logmes), "/".join(map(str, ks)),
            np.concatenate([np.full(len(t), k) for t, k in zip(taus, ks, strict=True)]))


def print_seeds(exported: export.Exported, bench: bm.Benchmark, benchmark: str, seeds: int) -> None:
    """The fixed split's k=0 and chosen-k tau of the ranker retrained with seeds 0..seeds-1."""
    print("| seed | k=0 | chosen k | tau at it | Model Spider factor |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            fitted = rankers.fit_again(exported.config.run, benchmark, tmp, f"s{seed}", seed=seed)[0]
            tau = curve(fitted.net, bench, bench.task_ids("test")).mean(0)
            print(f"| {seed} | {tau[0]:.3f} | {fitted.rerank_k} | {tau[fitted.rerank_k]:.3f} | "
                  f"{fitted.spider_factor:g} |", flush=True)


def print_tables(results: dict[str, Split], name: str, m: int) -> None:
    """Mean tau by k beside the prior and LogME, then the paired differences with bootstrap intervals."""
    print(f"mean weighted tau (rank=None) by k, the models embedding the task's data ({name}, M={m})")
    print("| k | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for k in range(m + 1):
        print(f"| {k} | " + " | ".join(f"{r[0][:, k].mean():.3f}" for r in results.values()) + " |")
    print("| prior (k=0) | " + " | ".join(f"{r[1].mean():.3f}" for r in results.values()) + " |")
    print(f"| LogME (k={m}) | " + " | ".join(f"{r[2].mean():.3f}" for r in results.values()) + " |")
    print("| shipped / chosen k | " + " | ".join(r[3] for r in results.values()) + " |")
    print("\nDifferences, paired over tasks, 95% percentile bootstrap interval "
          f"({evaluate.RESAMPLES} resamples of the tasks)")
    print("| split | chosen k - prior | k=M - prior | k=M - LogME |")
    print("|---|---|---|---|")
    for split, (tau, prior, logme, _, depth) in results.items():
        picks = evaluate.bootstrap_picks(len(tau))
        chosen = tau[np.arange(len(tau)), depth]
        cells = []
        for diff in (chosen - prior, tau[:, m] - prior, tau[:, m] - logme):
            lo, hi = evaluate.interval(diff, picks)
            cells.append(f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {split} | " + " | ".join(cells) + " |")


def plot(results: dict[str, Split], name: str, m: int, out: Path) -> None:
    """The curves by k, the prior as a line and LogME over all M as a marker, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (split, (tau, prior, logme, _, _)), colour in zip(results.items(), ("tab:blue", "tab:orange"), strict=False):
        ax.plot(range(m + 1), tau.mean(0), "o-", color=colour, label=f"ranker, {split}")
        ax.axhline(prior.mean(), color=colour, ls="--", lw=1, label=f"prior, {split}")
        ax.plot([m], [logme.mean()], "s", color=colour, ms=9, mfc="none", label=f"LogME (all M), {split}")
    ax.set_xlabel("k: models that embed the task's data")
    ax.set_ylabel("mean weighted tau (rank=None)")
    ax.set_title(f"Cost and quality on {name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--checkpoint", type=Path,
                        help="the ranker measured (default: checkpoints/<benchmark>-default)")
    parser.add_argument("--cv", action="store_true", help="add leave-one-group-out cross-validation")
    parser.add_argument("--cv-cache", type=Path,
                        help="with --cv: read back the inner fits that python -m ranker.evaluate --cv --cv-cache kept "
                             "in this folder, and keep new ones there")
    parser.add_argument("--plot", type=Path, help="write the curves here (PNG)")
    parser.add_argument("--seeds", type=int, default=0,
                        help="also retrain with seeds 0..N-1 on the training tasks: the fixed split's k=0 and chosen-k "
                             "tau of each (the stability the issue asks for)")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    exported = export.load(args.checkpoint or export.benchmark_checkpoint(bench.config.name), bench.manifest_path)
    test = bench.task_ids("test")
    results = {"fixed split": (curve(exported.net, bench, test), *baselines(bench, test, bench.task_ids("train")),
                               str(exported.config.rerank_k), np.full(len(test), exported.config.rerank_k))}
    if args.cv:
        results["grouped CV"] = cross_validated(exported, bench, args.benchmark, args.cv_cache)
    if args.seeds:
        print_seeds(exported, bench, args.benchmark, args.seeds)
    print_tables(results, bench.config.name, len(bench.models))
    if args.plot:
        plot(results, bench.config.name, len(bench.models), args.plot)

if __name__ == "__main__":
    main()
