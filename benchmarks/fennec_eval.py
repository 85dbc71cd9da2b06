"""Fennec (``ranker.learn.fennec``) against the prior, with ``ranker.evaluate``'s protocol: the fixed split and
leave-one-group-out cross-validation, fine-tuning ground truth, weighted tau (rank=None and symmetric), top-1
regret, 95% percentile bootstrap intervals over tasks and the paired difference to the prior
(``ranker.evaluate.score_tasks``, the same resampling seed and count).

Fixed split: Fennec trains on the training-role tasks minus the default train config's ``data.val_tasks``, picks its
epoch on those, and ranks the 13 test tasks; the prior is every model's mean fine-tuning accuracy over all
training-role tasks (``ranker.evaluate.prior_means``, as in ``ranker.evaluate``). Cross-validation:
``ranker.evaluate.folds`` over every task with fine-tuning ground truth; per fold Fennec trains on the other groups'
tasks minus the ``data.val_tasks`` among them (which validate) and the prior averages all the other groups' tasks.

Methods: ``fennec`` (v_m = free_m + A archi2vec_m), and the ablations ``fennec_free`` (free vectors only) and
``fennec_archi`` (A archi2vec_m only, no free part). Seconds: ``train s`` is the fit (per fold, summed over folds
under cross-validation), ``score s/task`` one task's scores over the zoo given its summary vector (the general
encoder's extraction, which the main ranker needs too, is not counted). The first seed gives the tables; every
seed's mean weighted tau and difference to the prior follow, since one seed of a 22-task fit is noisy.

Run (about 3 minutes for 5 seeds, one thread):
    OMP_NUM_THREADS=1 python benchmarks/fennec_eval.py --seeds 0 1 2 3 4 --json runs/fennec_eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ranker.evaluate import Run, add_group_intervals, cell, folds, measured_tasks, prior_means, score_tasks
from ranker.files import write_atomic
from ranker.learn import fennec
from ranker.learn.config import load_run_config
from ranker.tasks import benchmark as bm

METHODS = {"fennec": "both", "fennec_free": "free", "fennec_archi": "archi"}  # name -> Fennec model_side


def _prior_run(bench: bm.Benchmark, history: list[str], n: int) -> Run:
    kind, means = prior_means(bench, history)
    if kind != "finetune":
        raise ValueError(f"the prior over {len(history)} tasks is of kind {kind}; this script compares to finetune")
    return Run(np.tile(means, (n, 1)), np.zeros(n), np.zeros(n))


@torch.no_grad()
def _fennec_runs(bench: bm.Benchmark, train: list[str], val: list[str], held_out: list[str], seed: int
                 ) -> tuple[dict[str, Run], dict[str, float]]:
    """Each Fennec variant fitted on ``train`` (epoch chosen on ``val``) scoring ``held_out`` one task at a time;
    and its training seconds."""
    x = fennec.summaries(bench, held_out)
    runs, train_seconds = {}, {}
    for name, side in METHODS.items():
        start = time.perf_counter()
        with torch.enable_grad():
            net = fennec.fit_fennec(bench, train, val, model_side=side, seed=seed)
        train_seconds[name] = time.perf_counter() - start
        scores, seconds = np.zeros((len(held_out), len(bench.models))), np.zeros(len(held_out))
        for i in range(len(held_out)):
            start = time.perf_counter()
            scores[i] = net.score(x[i : i + 1])[0].numpy()
            seconds[i] = time.perf_counter() - start
        runs[name] = Run(scores, seconds, np.zeros(len(held_out)))
    return runs, train_seconds


def fixed_split(bench: bm.Benchmark, val_tasks: list[str], seed: int) -> dict:
    """``score_tasks`` of the test tasks (prior and the Fennec variants) plus ``train_seconds`` per variant."""
    test, train_role = bench.task_ids("test"), bench.task_ids("train")
    train = [t for t in train_role if t not in val_tasks]
    runs, train_seconds = _fennec_runs(bench, train, val_tasks, test, seed)
    runs["prior"] = _prior_run(bench, train_role, len(test))
    _, _, gt = bench.history.matrix("finetune", test, bench.models)
    return score_tasks(test, gt, runs) | {"train_seconds": train_seconds, "n_train": len(train),
                                          "n_val": len(val_tasks)}


def cross_validate(bench: bm.Benchmark, val_tasks: list[str], seed: int) -> dict:
    """``score_tasks`` over every fold's held-out tasks (with the differences' intervals over groups resampled too),
    ``folds`` (group, sizes) and ``train_seconds`` summed over folds."""
    fold_runs, infos, train_seconds = [], [], dict.fromkeys(METHODS, 0.0)
    cv_folds = folds(bench, measured_tasks(bench))
    for fold in cv_folds:
        val = [t for t in val_tasks if t in fold.train]
        train = [t for t in fold.train if t not in val]
        runs, seconds = _fennec_runs(bench, train, val, fold.held_out, seed)
        runs["prior"] = _prior_run(bench, fold.train, len(fold.held_out))
        fold_runs.append(runs)
        infos.append({"group": fold.group, "held_out": len(fold.held_out), "train": len(train), "val": len(val)})
        train_seconds = {name: train_seconds[name] + seconds[name] for name in METHODS}
    runs = {name: Run(*(np.concatenate([getattr(r[name], f) for r in fold_runs]) for f in Run._fields))
            for name in fold_runs[0]}
    task_ids = [t for fold in cv_folds for t in fold.held_out]
    _, _, gt = bench.history.matrix("finetune", task_ids, bench.models)
    split = score_tasks(task_ids, gt, runs)
    add_group_intervals(split, {fold.group: fold.held_out for fold in cv_folds})
    return split | {"folds": infos, "train_seconds": train_seconds, "n_tasks": len(task_ids)}


def table(split: dict) -> list[str]:
    """Markdown rows: each method's means [95% bootstrap], paired difference to the prior, seconds."""
    grouped = "wtau_groups_ci" in split["methods"]["fennec"]["vs_prior"]
    lines = ["| method | wtau | wtau_sym | regret | Δwtau vs prior" + (" [tasks] [groups]" if grouped else "")
             + " | Δwtau_sym vs prior | Δregret vs prior | train s | score s/task |", "|---" * 9 + "|"]
    for name, m in split["methods"].items():
        cells = [cell(m[k], m[f"{k}_ci"], 2 if k == "regret" else 3) for k in ("wtau", "wtau_sym", "regret")]
        vs = m.get("vs_prior")
        cells += [cell(vs[k], vs[f"{k}_ci"], 2 if k == "regret" else 3, "+") if vs else ""
                  for k in ("wtau", "wtau_sym", "regret")]
        if vs and grouped:
            low, high = vs["wtau_groups_ci"]
            cells[3] += f" [{low:+.3f}, {high:+.3f}]"
        train_s = split["train_seconds"].get(name)
        cells += ["" if train_s is None else f"{train_s:.1f}", f"{m['seconds_per_task']:.1e}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def seed_rows(results: list[dict], key: str) -> list[str]:
    """One row per seed: each Fennec variant's mean wtau and its difference to the prior."""
    lines = ["| seed | " + " | ".join(f"{n} wtau (Δ prior)" for n in METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for r in results:
        methods = r[key]["methods"]
        cells = [f"{methods[n]['wtau']:.3f} ({methods[n]['vs_prior']['wtau']:+.3f})" for n in METHODS]
        lines.append(f"| {r['seed']} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", type=Path, help="write every seed's results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..." once per fit
    warnings.filterwarnings("ignore", module="lightning")
    bench = bm.load_benchmark(args.benchmark)
    val_tasks = load_run_config().data.val_tasks or bench.validation_tasks()
    results = [{"seed": s, "fixed": fixed_split(bench, val_tasks, s), "cv": cross_validate(bench, val_tasks, s)}
               for s in args.seeds]
    first = results[0]
    lines = [f"## Fixed split ({len(first['fixed']['per_task']['prior'])} test tasks; Fennec trained on "
             f"{first['fixed']['n_train']}, validated on {first['fixed']['n_val']}), seed {first['seed']}", "",
             *table(first["fixed"]), "",
             f"## Leave-one-group-out CV ({first['cv']['n_tasks']} tasks, folds {first['cv']['folds']}), "
             f"seed {first['seed']}", "", *table(first["cv"]), "", "## Every seed: fixed split", "",
             *seed_rows(results, "fixed"), "", "## Every seed: CV", "", *seed_rows(results, "cv")]
    print("\n".join(lines))
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
