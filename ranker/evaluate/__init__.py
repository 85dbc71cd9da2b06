"""Evaluates every ranking method against fine-tuning ground truth: on a benchmark's test tasks (the fixed split)
and, with ``--cv``, by leave-one-group-out cross-validation over all its tasks; bootstrap intervals over tasks.

For each task the training part is embedded by every zoo model (timed; read from the features cache where
present, or extracted into an empty temporary cache with ``--fresh-cache`` so the seconds are the real extraction
cost), every transferability estimator scores every model on those features, and the scores over the zoo are
compared with the fine-tuning accuracies: weighted Kendall tau in both variants (``ranker.learn.metrics``) and
top-1 regret, averaged over tasks. ``prior`` ranks by mean historical accuracy on the training tasks (fine-tuning
where every model has some, else linear probe; the JSON's ``prior_kind`` says which): the same ranking for every
task, the floor a learned ranker must beat. An estimator that raises on a degenerate (task, model) is listed
under ``failures`` and that task is left out of its means (``n_tasks`` says over how many tasks each method was
averaged).

The learned ranker (an exported checkpoint, ``--checkpoint``) is evaluated as ``ranker`` (general-encoder
prototypes only) and ``ranker_rerank`` (its top k re-scored with their own prototypes, k from the checkpoint);
their extraction seconds are the general encoder's and, for re-ranking, those of the top-k models. ``fennec``
(``ranker.learn.fennec``, seed 0) is fitted here, on the training tasks minus the run config's ``data.val_tasks``,
which choose its epoch, and scores a task from the general encoder's summary vector alone.

Cross-validation (``cv`` in the JSON) takes every task with fine-tuning ground truth, either role, grouped by
``TaskSpec.group_name``: each fold holds out one group's tasks and evaluates them; the prior is the mean over the
other groups' tasks, and the ranker is trained again on those alone (``ranker.learn.lit.fit`` with the
checkpoint's run config, in a temporary folder; its ``data.val_tasks`` outside the held-out group validate), and
so is Fennec.
Estimators learn nothing from history: their scores are those of the fixed split, on more tasks.

Every mean carries a 95% percentile bootstrap interval over tasks (``wtau_ci``, ``wtau_sym_ci``, ``regret_ci``),
and every method its paired difference to the prior on the same resampled tasks (``vs_prior``).

LEEP and NCE need the source model's class probabilities, so they are evaluated only when every zoo model
ships a classification head (their seconds include that head's forward pass); otherwise the JSON says why
they were skipped.

Run:
    python -m ranker.evaluate --cv --json runs/eval.json --report data/benchmarks/offline/EVALUATION.md \
        --plot data/benchmarks/offline/evaluation.png
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ranker import transfer
from ranker.files import exit_with, write_atomic
from ranker.learn import rankers
from ranker.learn.config import DEFAULT_TRAIN_CONFIG, RunConfig, load_run_config, to_yaml
from ranker.learn.episodes import collate, load_episodes
from ranker.learn.metrics import WTAU_VARIANTS, top1_regret, weighted_tau
from ranker.learn.protocol import LearnedRanker
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import features
from ranker.zoo import manifest as zoo

NEEDS_SOURCE_HEAD = ("leep", "nce")
PRIOR_KINDS = ("finetune", "linear_probe")  # the prior averages the first kind measured for every model
METRICS = ("wtau", "wtau_sym", "regret")  # per task, averaged over tasks, each with a bootstrap interval
RESAMPLES, BOOTSTRAP_SEED = 2000, 0  # bootstrap resamples of the tasks; one draw shared by every method (paired)


class Run(NamedTuple):
    """One method on a list of tasks."""

    scores: np.ndarray  # [T, M] over the zoo; a row holding NaN: the method failed on that task
    seconds: np.ndarray  # [T] scoring seconds, features given
    extraction: np.ndarray  # [T] seconds of the feature extraction the method needed


@torch.inference_mode()
def source_probs(classifier: torch.nn.Module, transform, task) -> torch.Tensor:
    """Class probabilities ``[N, Z]`` of a member's own (source) head (``zoo.load_classifier``) on ``task``'s images."""
    device = next(classifier.parameters()).device
    chunks = []
    for start in range(0, len(task), 32):
        batch = torch.stack([transform(task.image(i)) for i in range(start, min(start + 32, len(task)))])
        chunks.append(classifier(batch.to(device)).softmax(-1).double().cpu())
    return torch.cat(chunks)



def _estimator_runs(bench: bm.Benchmark, entries: list[zoo.ZooEntry], names: list[str], tasks: list[bm.TaskSpec],
                    fresh_cache: bool):
    """Per estimator: scores ``[T, M]`` (NaN where it failed) and seconds ``[T]``; extraction seconds ``[T, M]``
    (reading the features cache, or extracting into an empty one with ``fresh_cache``); the failures as
    "task · model: message" lines."""
    scores = {n: np.full((len(tasks), len(entries)), np.nan) for n in names}
    seconds = {n: np.zeros(len(tasks)) for n in names}
    extraction, failures = np.zeros((len(tasks), len(entries))), []
    parts = [bm.task_parts(spec, bench.config)[0] for spec in tasks]
    needs_probs = any(n in NEEDS_SOURCE_HEAD for n in names)
    bar = tqdm(total=len(entries) * len(tasks), desc="features and estimators", unit="task")
    with tempfile.TemporaryDirectory() if fresh_cache else contextlib.nullcontext() as cache, bar:
        for j, entry in enumerate(entries):
            extractor = zoo.load_extractor(entry)
            if needs_probs:
                classifier = zoo.load_classifier(entry).to(features.best_device())
                transform = zoo.entry_transform(entry)
            for i, (spec, part) in enumerate(zip(tasks, parts, strict=True)):
                bar.set_postfix_str(f"{entry.name} · {spec.id}", refresh=False)
                start = time.perf_counter()
                feats = features.extract(extractor, part.task, cache_dir=cache, progress=False)
                extraction[i, j] = time.perf_counter() - start
                labels = torch.as_tensor(part.labels)
                probs, probs_seconds = None, 0.0
                if needs_probs:
                    start = time.perf_counter()
                    probs = source_probs(classifier, transform, part.task)
                    probs_seconds = time.perf_counter() - start  # a forward pass of its own: charged to LEEP/NCE
                for name in names:
                    extra = {"source_probs": probs} if name in NEEDS_SOURCE_HEAD else {}
                    start = time.perf_counter()
                    try:
                        scores[name][i, j] = transfer.get(name)(feats, labels, **extra)
                    except ValueError as err:  # a degenerate case of this estimator: reported, task left out
                        failures.append(f"{name}: {spec.id} · {entry.name}: {err}")
                    seconds[name][i] += time.perf_counter() - start + (probs_seconds if extra else 0.0)
                bar.update()
    return scores, seconds, extraction, failures


def _ranker_run(bench: bm.Benchmark, net: LearnedRanker, depth: int, task_ids: list[str], extraction: np.ndarray
                ) -> Run:
    """A learned ranker on ``task_ids`` with its top ``depth`` re-scored by their own features (0: none); its
    extraction seconds are the general encoder's and the top-``depth`` models' (``extraction`` ``[T, M]``, measured
    by ``_estimator_runs``). Task statistics come from the benchmark's stats files, which hold the same
    general-encoder and per-model prototypes of each task's training part."""
    episodes = load_episodes(bench, task_ids, ["finetune"])  # the targets stay unread here
    general = bench.models.index(bench.config.general_encoder)
    scores, seconds, needed = np.zeros(extraction.shape), np.zeros(len(task_ids)), np.zeros(len(task_ids))
    for i, episode in enumerate(episodes):
        batch = collate([episode])
        start = time.perf_counter()
        ranked = net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], depth, batch["evidence"])[0]
        seconds[i] = time.perf_counter() - start
        scores[i] = ranked.numpy()
        top = set(ranked.topk(depth).indices.tolist())  # rerank keeps the plain top k on top: those were re-scored
        needed[i] = extraction[i, sorted(top | {general})].sum()
    return Run(scores, seconds, needed)


def _ranker_runs(bench: bm.Benchmark, net: LearnedRanker, k: int, task_ids: list[str], extraction: np.ndarray
                 ) -> dict[str, Run]:
    """The checkpoint's ranker as ``ranker`` (general-encoder prototypes only) and ``ranker_rerank`` (its top
    ``k`` re-scored), as :func:`_ranker_run` measures them."""
    return {name: _ranker_run(bench, net, depth, task_ids, extraction)
            for name, depth in (("ranker", 0), ("ranker_rerank", k))}


def _fitted_runs(benchmark: str, bench: bm.Benchmark, history: list[str], val_tasks: list[str], held_out: list[str],
                 extraction: np.ndarray, tmp: str) -> tuple[dict[str, Run], dict[str, str]]:
    """Each ranker of ``rankers.FITTED_IN_EVALUATION`` fitted here with the default training config (seed 0) on
    ``history`` (``val_tasks`` among it choose its epoch or checkpoint; output under ``tmp``) and run on
    ``held_out`` at its own depth; and why any could not be fitted (no validation task in ``history``)."""
    runs, skipped = {}, {}
    for name in rankers.FITTED_IN_EVALUATION:
        cfg = load_run_config(DEFAULT_TRAIN_CONFIG, [f"ranker={name}"])
        cfg.data.val_tasks = list(val_tasks)
        try:
            fitted, _ = rankers.fit_again(cfg, benchmark, tmp, name, history)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        runs[name] = _ranker_run(bench, fitted.net, fitted.rerank_k, held_out, extraction)
    return runs, skipped


def _val_tasks(run: RunConfig | None) -> list[str]:
    """The validation tasks of the checkpoint's run config, else of the default training config."""
    return (run or load_run_config(DEFAULT_TRAIN_CONFIG)).data.val_tasks


def prior_means(bench: bm.Benchmark, task_ids: list[str]) -> tuple[str, np.ndarray] | None:
    """(kind, each model's mean accuracy over ``task_ids``) for the first of ``PRIOR_KINDS`` measured for every
    model there; None if neither is."""
    for kind in PRIOR_KINDS:
        _, _, past = bench.history.matrix(kind, task_ids, bench.models)
        if past.size and not np.isnan(past).all(axis=0).any():
            return kind, np.nanmean(past, axis=0)
    return None


def interval(values: np.ndarray, picks: np.ndarray) -> list[float]:
    """95% percentile interval of the mean of ``values`` ``[T]`` (NaN: left out) over the resamples ``picks``
    ``[R, T]`` of task indices."""
    ok = ~np.isnan(values)
    sums, counts = np.where(ok, values, 0.0)[picks].sum(1), ok[picks].sum(1)
    means = sums[counts > 0] / counts[counts > 0]
    return [float(q) for q in np.percentile(means, [2.5, 97.5])]


def score_tasks(task_ids: list[str], gt: np.ndarray, runs: dict[str, Run]) -> dict:
    """``methods`` (means over the tasks each method scored, with bootstrap intervals and the paired difference to
    ``prior``), ``per_task`` wtau, and ``skipped`` for methods that failed on every task."""
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
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(gt), (RESAMPLES, len(gt)))  # shared: paired
    for name, values in per_task.items():
        methods[name] |= {f"{m}_ci": interval(values[m], picks) for m in METRICS}
        if "prior" in per_task and name != "prior":
            diff = {m: values[m] - per_task["prior"][m] for m in METRICS}
            methods[name]["vs_prior"] = {m: float(np.nanmean(diff[m])) for m in METRICS} | {
                f"{m}_ci": interval(diff[m], picks) for m in METRICS}
    return {
        "methods": methods,
        "skipped": skipped,
        "per_task": {name: {t: float(v) for t, v in zip(task_ids, values["wtau"], strict=True) if not np.isnan(v)}
                     for name, values in per_task.items()},
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


def _fold_runs(bench: bm.Benchmark, benchmark: str, fold: Fold, index: int, run: RunConfig | None, tmp: str,
               extraction: np.ndarray) -> tuple[dict[str, Run], dict]:
    """The prior and (given a run config) the ranker trained again into ``tmp`` on ``fold.train``, evaluated on
    ``fold.held_out``; and what the fold used."""
    n = len(fold.held_out)
    prior, runs = prior_means(bench, fold.train), {}
    info = {"group": fold.group, "held_out": fold.held_out, "n_train_tasks": len(fold.train)}
    if prior is not None:
        info["prior_kind"] = prior[0]
        runs["prior"] = Run(np.tile(prior[1], (n, 1)), np.zeros(n), np.zeros(n))
    runs |= _fitted_runs(benchmark, bench, fold.train, _val_tasks(run), fold.held_out, extraction, tmp)[0]
    if run is not None:
        print(f"cv fold {index + 1} (group {fold.group}): training the ranker on {len(fold.train)} tasks",
              file=sys.stderr)
        start = time.perf_counter()
        fitted, data = rankers.fit_again(run, benchmark, tmp, f"fold{index}", fold.train)
        info |= {"val_tasks": data.val_ids, "rerank_k": fitted.rerank_k, "spider_factor": fitted.spider_factor,
                 "train_seconds": time.perf_counter() - start}
        runs |= _ranker_runs(bench, fitted.net, fitted.rerank_k, fold.held_out, extraction)
    return runs, info


def _inputs_digest(bench: bm.Benchmark, run: RunConfig | None) -> hashlib._Hash:
    """A running hash of what every fold's results depend on besides the code and the fold's tasks: the benchmark's
    history and task statistics and the ranker's run config (``.copy()`` it per fold)."""
    digest = hashlib.sha256()
    for name in ("history.csv", "stats.safetensors", "model_stats.safetensors"):
        path = bench.root / name
        digest.update(path.read_bytes() if path.is_file() else b"-")
    digest.update((to_yaml(run) if run is not None else "no ranker").encode())
    return digest


def _cross_validate(bench: bm.Benchmark, benchmark: str, cv_folds: list[Fold], estimator_runs: dict[str, Run],
                    rows: dict[str, int], run: RunConfig | None, skipped: dict[str, str], extraction: np.ndarray,
                    cache: Path | None = None) -> dict:
    """The ``cv`` part of the result: every method on every fold's held-out tasks (``rows``: their row in
    ``estimator_runs`` and ``extraction``); ``run``: the ranker's training config (None: not retrained).
    ``cache``: a folder where each finished fold is kept (``<group>-<hash of its inputs>.json``) and read back
    instead of retrained while its inputs are unchanged."""
    task_ids = [t for fold in cv_folds for t in fold.held_out]
    at = [rows[t] for t in task_ids]
    runs = {name: Run(r.scores[at], r.seconds[at], r.extraction[at]) for name, r in estimator_runs.items()}
    fold_runs, infos = [], []
    inputs = None if cache is None else _inputs_digest(bench, run)  # read once, not per fold
    with tempfile.TemporaryDirectory() as tmp:
        for index, fold in enumerate(cv_folds):
            kept = None
            if inputs is not None:
                key = inputs.copy()
                key.update(json.dumps([fold.group, fold.held_out, fold.train]).encode())
                kept = cache / f"{fold.group}-{key.hexdigest()[:20]}.json"
            if kept is not None and kept.is_file():
                print(f"cv fold {index + 1} (group {fold.group}): read from {kept}", file=sys.stderr)
                saved = json.loads(kept.read_text())
                fold_run = {name: Run(*(np.asarray(r[f], dtype=float) for f in Run._fields))
                            for name, r in saved["runs"].items()}
                info = saved["info"]
            else:
                fold_run, info = _fold_runs(bench, benchmark, fold, index, run, tmp,
                                            extraction[[rows[t] for t in fold.held_out]])
                if kept is not None:
                    write_atomic(kept, json.dumps({"info": info, "runs": {
                        name: {f: getattr(r, f).tolist() for f in Run._fields} for name, r in fold_run.items()}
                    }).encode())
            fold_runs.append(fold_run)
            infos.append(info)
    for name in [n for n in fold_runs[0] if all(n in r for r in fold_runs)]:  # one missing from a fold: left out
        runs[name] = Run(*(np.concatenate([getattr(r[name], f) for r in fold_runs]) for f in Run._fields))
    if "prior" not in runs:
        skipped["prior"] = "a fold has no finetune or linear-probe history of every model on its training tasks"
    _, _, gt = bench.history.matrix("finetune", task_ids, bench.models)
    split = score_tasks(task_ids, gt, runs)
    split["skipped"] = {n: why for n, why in (skipped | split["skipped"]).items() if n not in split["methods"]}
    return {"groups": [fold.group for fold in cv_folds], "n_tasks": len(task_ids), "folds": infos, **split}


def evaluate(benchmark: str = bm.DEFAULT_BENCHMARK, estimators: list[str] | None = None,
             checkpoint: str | Path = export.DEFAULT_CHECKPOINT, cv: bool = False, fresh_cache: bool = False,
             cv_cache: str | Path | None = None) -> dict:
    """The evaluation JSON (see DESIGN.md's contract): the fixed split, and ``cv`` when ``cv``; per-task wtau under
    ``per_task``. ``cv_cache``: keep each finished fold there and reuse it (``_cross_validate``), so a stopped run
    continues where it was.

    Raises:
        ValueError: unknown estimator, test tasks without finetune ground truth, a checkpoint of another general
            encoder, or (``cv``) tasks of a single group.
    """
    bench = bm.load_benchmark(benchmark)
    entries = list(bench.entries.values())
    models = bench.models
    names = estimators or transfer.names()
    for name in names:
        transfer.get(name)  # an unknown name fails here, before any extraction
    test = [t.id for t in bench.config.tasks if t.role == "test"]
    _, _, gt = bench.history.matrix("finetune", test, models)
    missing = [t for t, row in zip(test, gt, strict=True) if np.isnan(row).all()]
    if missing:
        raise ValueError(f"test tasks {missing} have no finetune ground truth; build it with "
                         f"`python -m data.build_history --benchmark {bench.config.name} --kind finetune --role test`")
    cv_folds = []
    if cv:
        _, _, every = bench.history.matrix("finetune", [t.id for t in bench.config.tasks], models)
        measured = [t.id for t, row in zip(bench.config.tasks, every, strict=True) if np.isfinite(row).sum() >= 2]
        cv_folds = folds(bench, measured)
    scored = {t for fold in cv_folds for t in fold.held_out} | set(test)
    tasks = [t for t in bench.config.tasks if t.id in scored]
    rows = {t.id: i for i, t in enumerate(tasks)}
    skipped = {}
    if not all(e.num_classes for e in entries):  # load_classifier's rule: a stored head has num_classes > 0
        skipped = {n: "needs the source model's class probabilities; some zoo members ship no classification head"
                   for n in names if n in NEEDS_SOURCE_HEAD}
    names = [n for n in names if n not in skipped]
    scores, seconds, extraction, failures = _estimator_runs(bench, entries, names, tasks, fresh_cache)
    estimator_runs = {n: Run(scores[n], seconds[n], extraction.sum(1)) for n in names}
    at = [rows[t] for t in test]
    runs = {n: Run(r.scores[at], r.seconds[at], r.extraction[at]) for n, r in estimator_runs.items()}
    run_config = None
    try:
        exported = export.load(checkpoint, bench.manifest_path)
    except export.ExportError as err:
        skipped["ranker"] = skipped["ranker_rerank"] = str(err)
    else:
        if exported.config.general_encoder != bench.config.general_encoder:
            raise ValueError(f"checkpoint {checkpoint} tokenizes tasks with {exported.config.general_encoder}, "
                             f"benchmark {bench.config.name!r} with {bench.config.general_encoder}; pass a checkpoint "
                             "trained on this benchmark")
        run_config = exported.config.run
        runs |= _ranker_runs(bench, exported.net, exported.config.rerank_k, test, extraction[at])
    prior = prior_means(bench, bench.task_ids("train"))
    if prior is None:
        skipped["prior"] = "needs finetune or linear-probe history of every model on training tasks"
    else:
        runs["prior"] = Run(np.tile(prior[1], (len(test), 1)), np.zeros(len(test)), np.zeros(len(test)))
    with tempfile.TemporaryDirectory() as tmp:
        fitted, not_fitted = _fitted_runs(benchmark, bench, bench.task_ids("train"), _val_tasks(run_config), test,
                                          extraction[at], tmp)
    runs |= fitted
    skipped |= not_fitted
    fixed = score_tasks(test, gt, runs)
    result = {
        "benchmark": bench.config.name,
        "prior_kind": prior and prior[0],
        "n_test_tasks": len(test),
        "n_models": len(models),
        "fresh_cache": fresh_cache,
        "checkpoint": str(checkpoint),
        "estimators": names if estimators else None,  # None: every registered one
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "95% percentile, over tasks"},
        "methods": fixed["methods"],
        "skipped": skipped | fixed["skipped"],
        "failures": failures,
        "per_task": fixed["per_task"],
    }
    if cv:
        result["cv"] = _cross_validate(bench, benchmark, cv_folds, estimator_runs, rows, run_config, dict(skipped),
                                       extraction, None if cv_cache is None else Path(cv_cache))
    return result


def cell(value: float, ci: list[float], digits: int, sign: str = "") -> str:
    """A mean and its interval for a markdown table, e.g. ``0.729 [0.660, 0.790]`` (``sign="+"``: signed)."""
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


def _table(methods: dict) -> list[str]:
    """Markdown rows of one split's methods, best wtau first; a difference to the prior whose interval excludes 0
    is bold."""
    lines = ["| method | wtau | wtau_sym | regret | Δwtau vs prior | Δwtau_sym vs prior | Δregret vs prior "
             "| s/task (features given) | s/task (incl. features) | tasks |", "|---" * 10 + "|"]
    for name, m in sorted(methods.items(), key=lambda item: -item[1]["wtau"]):
        cells = [cell(m[k], m[f"{k}_ci"], 2 if k == "regret" else 3) for k in METRICS]
        for k in METRICS:
            if "vs_prior" not in m:
                cells.append("")
                continue
            d, ci = m["vs_prior"][k], m["vs_prior"][f"{k}_ci"]
            text = cell(d, ci, 2 if k == "regret" else 3, "+")
            cells.append(f"**{text}**" if ci[0] > 0 or ci[1] < 0 else text)
        lines.append(f"| {name} | {' | '.join(cells)} | {m['seconds_per_task']:.3f} | "
                     f"{m['seconds_per_task_with_features']:.2f} | {m['n_tasks']} |")
    return lines


def markdown(result: dict, plot_link: str | None = None) -> str:
    """The fixed-split table and, when cross-validated, the cross-validation table; ``plot_link``: a written bar
    chart to show (relative to the report)."""
    cv = result.get("cv")
    flags = (f" --benchmark {result['benchmark']}" * (result["benchmark"] != bm.DEFAULT_BENCHMARK)
             + (f" --checkpoint {result['checkpoint']}" if result.get("checkpoint") and Path(result["checkpoint"])
                .resolve() != export.DEFAULT_CHECKPOINT.resolve() else "")
             + (f" --estimators {' '.join(result['estimators'])}" if result.get("estimators") else "")
             + " --cv" * bool(cv) + " --fresh-cache" * result["fresh_cache"])
    cache = ("features extracted into a fresh cache, so 'incl. features' is the real extraction cost"
             if result["fresh_cache"] else "features read from the features cache where present, so 'incl. "
             "features' counts only what was not cached (`--fresh-cache` measures extraction)")
    lines = [
        f"# Evaluation on `{result['benchmark']}`: {result['n_test_tasks']} test tasks x {result['n_models']} models",
        "",
        f"Regenerate: `python -m ranker.evaluate{flags} --json runs/eval.json --report "
        f"data/benchmarks/{result['benchmark']}/EVALUATION.md"
        + (f" --plot data/benchmarks/{result['benchmark']}/evaluation.png" if plot_link else "") + "`. "
        "Ground truth: `finetune` accuracy. wtau: mean over tasks of `scipy.stats.weightedtau(gt, score, "
        "rank=None)` (Model Spider's table); wtau_sym: scipy's default weighting; regret: best accuracy minus that "
        "of the top-ranked model (points). prior: each model's mean "
        f"{result['prior_kind'] or '(none)'} accuracy on the training tasks. [brackets]: 95% percentile bootstrap "
        f"interval over tasks ({result['bootstrap']['resamples']} resamples); Δ: the paired difference to the prior "
        f"on the same resampled tasks, bold where its interval excludes 0. Seconds: {cache}.",
        "",
        "## Fixed split (the test tasks)",
        "",
        *_table(result["methods"]),
    ]
    lines += [f"\n- `{name}` not evaluated: {why}." for name, why in result["skipped"].items()]
    if cv:
        trained = [f for f in cv["folds"] if "train_seconds" in f]
        lines += ["", f"## Leave-one-group-out cross-validation ({cv['n_tasks']} tasks, either role, in "
                  f"{len(cv['groups'])} groups)", "",
                  "Each fold holds out every task of one group; the prior and the ranker (retrained with the "
                  "checkpoint's run config, k chosen on its validation tasks outside the group) see only the "
                  "other groups' tasks.", "",
                  "| held-out group | tasks | training tasks | ranker validation tasks | k | spider_factor | "
                  "training s |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {f['group']} | {len(f['held_out'])} | {f['n_train_tasks']} | {len(f.get('val_tasks', []))} | "
                  f"{f.get('rerank_k', '')} | {f.get('spider_factor', f.get('spider_shrink', ''))} | "  # the old key:
                  f"{f.get('train_seconds', 0):.0f} |" for f in cv["folds"]]  # results and cached folds of before
        lines += ["", *_table(cv["methods"])]
        lines += [f"\n- `{name}` not evaluated: {why}." for name, why in cv["skipped"].items()]
        if trained:
            lines.append(f"\nRetraining the ranker took {sum(f['train_seconds'] for f in trained):.0f} s over "
                         f"{len(trained)} folds.")
    if result["failures"]:
        lines += ["", f"Estimator failures ({len(result['failures'])}; those tasks are out of that method's means):"]
        lines += [f"- {f}" for f in result["failures"]]
    if plot_link:
        lines.append(f"\n![weighted tau per method, fixed split]({plot_link})")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path | io.BytesIO) -> None:
    """Horizontal bars of both weighted-tau variants per method on the fixed split, best first, with their
    bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["methods"].items(), key=lambda item: item[1]["wtau"])
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    for key, shift, label in (("wtau", 0.2, "wtau (rank=None, Model Spider)"),
                              ("wtau_sym", -0.2, "wtau (symmetric, scipy default)")):
        means = np.array([m[key] for _, m in rows])
        spread = np.abs(np.array([m[f"{key}_ci"] for _, m in rows]).T - means)
        ax.barh(y + shift, means, height=0.4, xerr=spread, capsize=2, label=label)
    ax.set_yticks(y, [name for name, _ in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"mean weighted Kendall tau vs fine-tuning, {result['n_test_tasks']} test tasks (95% bootstrap)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    parser.add_argument("--json", type=Path, help="write the result JSON here")
    parser.add_argument("--report", type=Path, help="write the markdown tables here")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG) of both tau variants here")
    parser.add_argument("--estimators", nargs="*", help="registry names; default: all")
    parser.add_argument("--checkpoint", type=Path, default=export.DEFAULT_CHECKPOINT,
                        help="exported ranker evaluated as `ranker` and `ranker_rerank` (skipped if unusable); "
                             "with --cv its run config retrains it per fold")
    parser.add_argument("--cv", action="store_true",
                        help="add leave-one-group-out cross-validation over every task with fine-tuning ground truth")
    parser.add_argument("--cv-cache", type=Path, metavar="DIR",
                        help="keep each finished cross-validation fold in DIR and reuse it while its inputs (history, "
                             "task statistics, run config, tasks) are unchanged: a stopped --cv run continues where it "
                             "was (empty DIR after changing the code)")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="extract features into an empty temporary cache, so extraction seconds are real")
    args = parser.parse_args()
    try:
        result = evaluate(args.benchmark, args.estimators, args.checkpoint, args.cv, args.fresh_cache, args.cv_cache)
    except ValueError as err:  # unknown benchmark or estimator, missing ground truth: the message says the fix
        print(f"evaluate: {err}", file=sys.stderr)
        sys.exit(2)
    link = None
    if args.plot:
        buffer = io.BytesIO()
        plot(result, buffer)
        write_atomic(args.plot, buffer.getvalue())
        link = os.path.relpath(args.plot, args.report.parent if args.report else Path.cwd())
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2).encode())
    report = markdown(result, link)
    if args.report:
        write_atomic(args.report, report.encode())
    print(report)


def cli() -> None:
    """``python -m ranker.evaluate`` and the ``ptm-evaluate`` command."""
    exit_with(main)


if __name__ == "__main__":
    cli()
