"""The evaluation protocol: what a method's run is, how its scores over the zoo are compared with fine-tuning
ground truth (weighted Kendall tau in both variants and top-1 regret, averaged over tasks, each mean with a 95%
percentile bootstrap interval over tasks and a paired difference to the prior), the prior every method must beat,
and the leave-one-group-out folds of cross-validation.

Shapes: T tasks, M zoo models, R bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ranker.learn.metrics import WTAU_VARIANTS, top1_regret, weighted_tau
from ranker.learn.modelspider import zscore_within
from ranker.tasks import benchmark as bm

PRIOR_KINDS = ("finetune", "linear_probe")  # the prior averages the first kind measured for every model
METRICS = ("wtau", "wtau_sym", "regret")  # per task, averaged over tasks, each with a bootstrap interval
RESAMPLES, BOOTSTRAP_SEED = 2000, 0  # bootstrap resamples of the tasks; one draw shared by every method (paired)


class Run(NamedTuple):
    """One method on a list of tasks."""

    scores: np.ndarray  # [T, M] over the zoo; a row holding NaN: the method failed on that task
    seconds: np.ndarray  # [T] scoring seconds, features given
    extraction: np.ndarray  # [T] seconds of the feature extraction the method needed



def prior_means(bench: bm.Benchmark, task_ids: list[str]) -> tuple[str, np.ndarray] | None:
    """(kind, each model's mean accuracy over ``task_ids``) for the first of ``PRIOR_KINDS`` measured for every
    model there; None if neither is."""
    for kind in PRIOR_KINDS:
        _, _, past = bench.history.matrix(kind, task_ids, bench.models)
        if past.size and not np.isnan(past).all(axis=0).any():
            return kind, np.nanmean(past, axis=0)
    return None


def mean_tau(gt: np.ndarray, score: np.ndarray) -> float:
    """Mean over the rows of ``gt`` [T, M] of weighted tau (``rank=None``) of the one ranking ``score`` [M]."""
    return float(np.mean([weighted_tau(row, score) for row in gt]))


def best_constant(gt: np.ndarray) -> tuple[np.ndarray, float]:
    """The constant ranking that best fits the tasks ``gt`` [T, M] themselves: the ceiling of every constant list.

    Exact search is over M! orders, so this climbs: from each model's mean accuracy and its mean rank, it moves
    one model to another place in the order while that raises the mean weighted tau. The result is a constant
    ranking that scores this well, so the true ceiling is at least as high.

    Returns:
        (scores [M], higher is better; the mean weighted tau it reaches on ``gt``)
    """
    starts = [gt.mean(0), (gt.argsort(1).argsort(1)).mean(0)]
    best_order, best = None, -np.inf
    for start in starts:
        order = list(np.argsort(-start))
        value = mean_tau(gt, _order_scores(order))
        improved = True
        while improved:
            improved = False
            for i in range(len(order)):
                for j in range(len(order)):
                    if i == j:
                        continue
                    trial = order.copy()
                    trial.insert(j, trial.pop(i))
                    trial_value = mean_tau(gt, _order_scores(trial))
                    if trial_value > value + 1e-12:
                        order, value, improved = trial, trial_value, True
        if value > best:
            best_order, best = order, value
    return _order_scores(best_order), best


def _order_scores(order: list[int]) -> np.ndarray:
    """Scores that rank the models in ``order`` (best first)."""
    scores = np.empty(len(order))
    scores[order] = np.arange(len(order), 0, -1)
    return scores


def measured_tasks(bench: bm.Benchmark, task_ids: list[str] | None = None) -> list[str]:
    """The tasks of ``task_ids`` (None: every task of the benchmark, in its order) with fine-tuning ground truth for
    two models or more: the ones a ranking can be scored on."""
    task_ids = [t.id for t in bench.config.tasks] if task_ids is None else task_ids
    _, _, gt = bench.history.matrix("finetune", task_ids, bench.models)
    return [t for t, row in zip(task_ids, gt, strict=True) if np.isfinite(row).sum() >= 2]


def bootstrap_picks(n: int) -> np.ndarray:
    """The shared resamples ``[R, n]`` of n items (tasks or groups), drawn from ``BOOTSTRAP_SEED``: every method
    and every difference scored on the same n items uses this one draw, which makes the differences paired."""
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (RESAMPLES, n))


def zscore_rows(values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` ``[T, M]`` z-scored over their finite entries (0 elsewhere), as the ranker z-scores
    evidence within a task."""
    x = torch.from_numpy(values)
    return zscore_within(x, torch.isfinite(x)).numpy()


def group_interval(values: dict[str, float], groups: dict[str, list[str]]) -> tuple[float, list[float]]:
    """(mean over every task, 95% percentile interval of that task-weighted mean when whole groups are resampled)
    of ``values`` (task -> value; a task without a value is left out); ``groups``: group -> its tasks.

    Tasks of one group are alike, so resampling tasks understates what a new group would do; this resamples the
    groups (``bootstrap_picks`` of their number) and takes all the tasks of each drawn group.
    """
    names = list(groups)
    sums = np.array([sum(values[t] for t in groups[g] if t in values) for g in names])
    counts = np.array([sum(t in values for t in groups[g]) for g in names])
    picks = bootstrap_picks(len(names))
    means = sums[picks].sum(1) / np.maximum(counts[picks].sum(1), 1)
    return float(sums.sum() / counts.sum()), [float(q) for q in np.percentile(means, [2.5, 97.5])]


def add_group_intervals(split: dict, groups: dict[str, list[str]]) -> None:
    """Adds ``vs_prior["wtau_groups_ci"]`` to every method of a ``score_tasks`` result that has a paired difference to
    the prior: that difference's interval with whole groups resampled (``group_interval``; ``groups``: group -> its
    tasks), the honest interval for a new dataset under cross-validation."""
    for name, method in split["methods"].items():
        if "vs_prior" in method:
            diff = {t: v - split["per_task"]["prior"][t] for t, v in split["per_task"][name].items()
                    if t in split["per_task"]["prior"]}
            method["vs_prior"]["wtau_groups_ci"] = group_interval(diff, groups)[1]


def interval(values: np.ndarray, picks: np.ndarray) -> list[float]:
    """95% percentile interval of the mean of ``values`` ``[T]`` (NaN: left out) over the resamples ``picks``
    ``[R, T]`` of task indices."""
    ok = ~np.isnan(values)
    sums, counts = np.where(ok, values, 0.0)[picks].sum(1), ok[picks].sum(1)
    means = sums[counts > 0] / counts[counts > 0]
    return [float(q) for q in np.percentile(means, [2.5, 97.5])]


def score_tasks(task_ids: list[str], gt: np.ndarray, runs: dict[str, Run]) -> dict:
    """``methods`` (means over the tasks each method scored, with bootstrap intervals and the paired difference to
    ``prior``), ``per_task`` wtau and ``per_task_regret`` (method -> task -> value), and ``skipped`` for methods that
    failed on every task."""
    per_task, methods, skipped = {}, {}, {}
    for name, run in runs.items():
        values = {m: np.full(len(gt), np.nan) for m in METRICS}
        for i, (g, s) in enumerate(zip(gt, run.scores, strict=True)):
            if not np.isnan(s).any():
                values["wtau"][i], values["wtau_sym"][i] = (weighted_tau(g, s, v) for v in WTAU_VARIANTS)
                values["regret"][i] = top1_regret(g, s)
        ok = ~np.isnan(values["wtau"])
        if not ok.any():
            skipped[name] = "the method failed on every task"
            continue
        per_task[name] = values
        methods[name] = {m: float(np.mean(values[m][ok])) for m in METRICS} | {
            "seconds_per_task": float(np.mean(run.seconds[ok])),
            "seconds_per_task_with_features": float(np.mean(run.seconds[ok] + run.extraction[ok])),
            "n_tasks": int(ok.sum()),
        }
    picks = bootstrap_picks(len(gt))
    for name, values in per_task.items():
        methods[name] |= {f"{m}_ci": interval(values[m], picks) for m in METRICS}
        if "prior" in per_task and name != "prior":
            diff = {m: values[m] - per_task["prior"][m] for m in METRICS}
            methods[name]["vs_prior"] = {m: float(np.nanmean(diff[m])) for m in METRICS} | {
                f"{m}_ci": interval(diff[m], picks) for m in METRICS}
    return {
        "methods": methods,
        "skipped": skipped,
        **{key: {name: {t: float(v) for t, v in zip(task_ids, values[metric], strict=True) if not np.isnan(v)}
                 for name, values in per_task.items()}
           for key, metric in (("per_task", "wtau"), ("per_task_regret", "regret"))},
    }


@dataclass
class Fold:
    """One fold of grouped cross-validation."""

    group: str  # the held-out group (``TaskSpec.group_name``)
    held_out: list[str]  # its tasks: evaluated in this fold only
    train: list[str]  # every other task with fine-tuning ground truth: the prior's and the ranker's history


def folds(bench: bm.Benchmark, task_ids: list[str]) -> list[Fold]:
    """Leave-one-group-out over ``task_ids`` (either role), groups in benchmark order.

    Raises:
        ValueError: the tasks form fewer than two groups.
    """
    group = {t.id: t.group_name for t in bench.config.tasks}
    groups = list(dict.fromkeys(group[t] for t in task_ids))
    if len(groups) < 2:
        raise ValueError(f"cross-validation needs tasks of two groups or more; benchmark {bench.config.name!r} has "
                         f"{groups}: give its tasks a `group` in benchmark.yaml")
    return [Fold(g, [t for t in task_ids if group[t] == g], [t for t in task_ids if group[t] != g]) for g in groups]

