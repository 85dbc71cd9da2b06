"""The evaluation's runs: every method on every task it is evaluated on, the fixed split and cross-validation.

For each task the training part is embedded by every zoo model (timed; read from the features cache, or extracted
into an empty temporary cache with ``fresh_cache``), every transferability estimator scores every model on those
features; the checkpoint's ranker scores from the benchmark's stored prototypes, plain and re-ranked; the
registry's ``FITTED_IN_EVALUATION`` rankers are fitted on each split's history; the prior is the history's mean.
A cross-validation fold that finished is kept in a cache folder, keyed by a hash of its inputs, and read back;
runs given the same folder share its folds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ranker import transfer
from ranker.evaluate.protocol import (
    BOOTSTRAP_SEED,
    RESAMPLES,
    Fold,
    Run,
    add_group_intervals,
    best_constant,
    folds,
    measured_tasks,
    prior_means,
    score_tasks,
)
from ranker.files import locked, write_atomic
from ranker.learn import rankers, selection
from ranker.learn.config import DEFAULT_TRAIN_CONFIG, RunConfig, learning_yaml, load_run_config
from ranker.learn.episodes import collate, load_episodes
from ranker.learn.protocol import LearnedRanker
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import features
from ranker.zoo import manifest as zoo

NEEDS_SOURCE_HEAD = ("leep", "nce")

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


def _ranker_run(bench: bm.Benchmark, net: LearnedRanker, depth: int, task_ids: list[str]) -> Run:
    """A learned ranker on ``task_ids`` with its top ``depth`` re-scored by their own features (0: none), its
    extraction not yet charged (zeros; :func:`_charge_extraction`). Task statistics come from the benchmark's stats
    files, which hold the same general-encoder and per-model prototypes of each task's training part, so no
    features are read here."""
    episodes = load_episodes(bench, task_ids, ["finetune"])  # the targets stay unread here
    scores, seconds = np.zeros((len(task_ids), len(bench.models))), np.zeros(len(task_ids))
    for i, episode in enumerate(episodes):
        batch = collate([episode])
        start = time.perf_counter()
        scores[i] = net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], depth,
                               batch["evidence"])[0].numpy()
        seconds[i] = time.perf_counter() - start
    return Run(scores, seconds, np.zeros(len(task_ids)))


def _charge_extraction(run: Run, depth: int, extraction: np.ndarray, general: int) -> Run:
    """``run`` of a learned ranker at re-ranking ``depth`` with the extraction seconds it needed charged: the
    general encoder's and those of its top ``depth`` models (re-ranking keeps the re-scored models on top), from
    ``extraction`` ``[T, M]`` (measured by ``_estimator_runs``)."""
    top = np.argsort(-run.scores, axis=1, kind="stable")[:, :depth]
    needed = np.zeros(extraction.shape, dtype=bool)
    np.put_along_axis(needed, top, True, axis=1)
    needed[:, general] = True
    return run._replace(extraction=(extraction * needed).sum(1))


@torch.no_grad()
def ranker_scores(bench: bm.Benchmark, net: LearnedRanker, task_ids: list[str], k: int) -> np.ndarray:
    """``[T, M]`` scores of a learned ranker on the benchmark's ``task_ids`` with its top ``k`` re-scored (0: none),
    from the benchmark's stats files, as the ``ranker`` rows are scored."""
    batch = collate(load_episodes(bench, task_ids, ["finetune"]))
    return net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"]).numpy()


Depths = dict[str, int]
"""A learned method's name -> its re-ranking depth: what :func:`_charge_extraction` needs to charge its run."""


def _ranker_runs(bench: bm.Benchmark, net: LearnedRanker, k: int, task_ids: list[str]
                 ) -> tuple[dict[str, Run], Depths]:
    """The checkpoint's ranker as ``ranker`` (general-encoder prototypes only) and ``ranker_rerank`` (its top
    ``k`` re-scored), as :func:`_ranker_run` scores them, and each one's re-ranking depth."""
    depths = {"ranker": 0, "ranker_rerank": k}
    return {name: _ranker_run(bench, net, depth, task_ids) for name, depth in depths.items()}, depths


def _fitted_runs(benchmark: str, bench: bm.Benchmark, history: list[str], val_tasks: list[str], held_out: list[str],
                 tmp: str) -> tuple[dict[str, Run], Depths, dict[str, str]]:
    """Each ranker of ``rankers.FITTED_IN_EVALUATION`` fitted here with the default training config (seed 0) on
    ``history`` (``val_tasks`` among it choose its epoch or checkpoint; output under ``tmp``) and run on
    ``held_out`` at its own depth (extraction not charged); the depths; and why any could not be fitted (no
    validation task in ``history``)."""
    runs, depths, skipped = {}, {}, {}
    for name in rankers.FITTED_IN_EVALUATION:
        cfg = load_run_config(DEFAULT_TRAIN_CONFIG, [f"ranker={name}"])
        cfg.data.val_tasks = list(val_tasks)
        try:
            fitted, _ = rankers.fit_again(cfg, benchmark, tmp, name, history)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        runs[name], depths[name] = _ranker_run(bench, fitted.net, fitted.rerank_k, held_out), fitted.rerank_k
    return runs, depths, skipped


def _val_tasks(run: RunConfig | None) -> list[str]:
    """The validation tasks of the checkpoint's run config, else of the default training config (empty: the
    benchmark's own, which the episodes resolve)."""
    return (run or load_run_config(DEFAULT_TRAIN_CONFIG)).data.val_tasks



@dataclass
class Measured:
    """What every split of one evaluation reads: the estimators' runs and the extraction seconds of every task
    evaluated anywhere."""

    bench: bm.Benchmark
    rows: dict[str, int]  # task id -> its row in ``estimator_runs`` and ``extraction``
    estimator_runs: dict[str, Run]
    extraction: np.ndarray  # [T, M] seconds of each model's features of each task

    def at(self, task_ids: list[str]) -> list[int]:
        """Rows of ``task_ids``."""
        return [self.rows[t] for t in task_ids]

    def charged(self, runs: dict[str, Run], depths: Depths, task_ids: list[str]) -> dict[str, Run]:
        """``runs`` on ``task_ids`` with the extraction of each learned method (those in ``depths``) charged."""
        extraction = self.extraction[self.at(task_ids)]
        general = self.bench.models.index(self.bench.config.general_encoder)
        return {name: _charge_extraction(run, depths[name], extraction, general) if name in depths else run
                for name, run in runs.items()}


def _prior_run(bench: bm.Benchmark, history: list[str], n: int) -> tuple[str, Run] | None:
    """(kind, run) of the prior learned from ``history`` on ``n`` tasks; None without such history."""
    prior = prior_means(bench, history)
    return None if prior is None else (prior[0], Run(np.tile(prior[1], (n, 1)), np.zeros(n), np.zeros(n)))


HINDSIGHT = "best_constant"
"""The row of the one constant ranking fitted to the very tasks it is scored on: a ceiling of every constant list
(the prior is one), not a method, since it reads the ground truth it is scored against."""


def _hindsight_run(gt: np.ndarray) -> Run | None:
    """The best constant ranking in hindsight (``best_constant``) over the complete rows of ``gt`` ``[T, M]``, as a
    run on every row; None with fewer than two complete rows."""
    complete = ~np.isnan(gt).any(1)
    if complete.sum() < 2:
        return None
    scores = best_constant(gt[complete])[0]
    return Run(np.tile(scores, (len(gt), 1)), np.zeros(len(gt)), np.zeros(len(gt)))


def _fold_runs(bench: bm.Benchmark, benchmark: str, run: RunConfig | None, fold: Fold, index: int, tmp: str
               ) -> tuple[dict[str, Run], dict]:
    """The prior, the fitted rankers and (given the checkpoint's run config) its ranker trained again into ``tmp``
    on ``fold.train``, evaluated on ``fold.held_out``; and what the fold used, with the learned methods' depths
    (``depths``): their extraction is charged later, so a fold reads no features."""
    runs, info = {}, {"group": fold.group, "held_out": fold.held_out, "n_train_tasks": len(fold.train)}
    prior = _prior_run(bench, fold.train, len(fold.held_out))
    if prior is not None:
        info["prior_kind"], runs["prior"] = prior
    fitted, depths, _ = _fitted_runs(benchmark, bench, fold.train, _val_tasks(run), fold.held_out, tmp)
    runs |= fitted
    if run is not None:
        print(f"cv fold {index + 1} (group {fold.group}): training the ranker on {len(fold.train)} tasks",
              file=sys.stderr)
        start = time.perf_counter()
        trained, data = rankers.fit_again(run, benchmark, tmp, f"fold{index}", fold.train)
        info |= {"val_tasks": data.val_ids, "spider_factor": trained.spider_factor,
                 "train_seconds": time.perf_counter() - start}
        ranker_runs, ranker_depths = _ranker_runs(bench, trained.net, trained.rerank_k, fold.held_out)
        runs, depths = runs | ranker_runs, depths | ranker_depths
    info["depths"] = depths
    return runs, info


FOLD_SOURCES = tuple(zoo.REPO_ROOT / "ranker" / p for p in ("learn", "tasks", "configs/train", "evaluate/runs.py",
                                                             "evaluate/protocol.py", "zoo/archi2vec.py"))
"""The code and training configs (folders or files) a fold's results depend on: a kept fold is computed again once
they change. The reports and command lines are not among them."""


def _code_digest() -> str:
    """A hash of the code and training configs in ``FOLD_SOURCES``."""
    files = [p for source in FOLD_SOURCES for p in (source.rglob("*") if source.is_dir() else [source])]
    digest = hashlib.sha256()
    for path in sorted(p for p in files if p.suffix in (".py", ".yaml")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def inner_fits_folder(cache: Path | None, tmp: str) -> Path:
    """Where folds keep their inner fits of model selection (``selection.shared_inner_fits``): under ``cache`` (a
    ``--cv-cache`` folder; else ``tmp``), in ``inner/<hash of the code>``, so a change of the code they run starts
    an empty folder."""
    return (cache or Path(tmp)) / "inner" / _code_digest()[:20]


def _inputs_digest(bench: bm.Benchmark, run: RunConfig | None, code: str) -> hashlib._Hash:
    """A running hash of what every fold's results depend on besides the fold's tasks: the ``code``
    (:func:`_code_digest`), the benchmark's history and task statistics and the ranker's run config without where
    its run was written (``learning_yaml``); ``.copy()`` it per fold."""
    digest = bench.files_digest()
    digest.update((code + (learning_yaml(run) if run is not None else "no ranker")).encode())
    return digest



def _kept_fold_runs(bench: bm.Benchmark, benchmark: str, run: RunConfig | None, fold: Fold, index: int, tmp: str,
                    kept: Path | None) -> tuple[dict[str, Run], dict]:
    """:func:`_fold_runs`, read from the file ``kept`` where it exists and written there otherwise (None: no
    cache)."""
    if kept is not None and kept.is_file():
        print(f"cv fold {index + 1} (group {fold.group}): read from {kept}", file=sys.stderr)
        saved = json.loads(kept.read_text())
        return ({name: Run(*(np.asarray(r[f], dtype=float) for f in Run._fields)) for name, r in saved["runs"].items()},
                saved["info"])
    fold_run, info = _fold_runs(bench, benchmark, run, fold, index, tmp)
    if kept is not None:
        write_atomic(kept, json.dumps({"info": info, "runs": {
            name: {f: getattr(r, f).tolist() for f in Run._fields} for name, r in fold_run.items()}}).encode())
    return fold_run, info


def _fold_results(bench: bm.Benchmark, benchmark: str, run: RunConfig | None, cv_folds: list[Fold],
                  cache: Path | None) -> list[tuple[dict[str, Run], dict]]:
    """:func:`_fold_runs` of every fold. ``cache``: a folder where each finished fold is kept
    (``<group>-<hash of its inputs>.json``) and read back instead of retrained while its inputs are unchanged.
    Runs that share ``cache`` share the folds: each fold is computed by whichever run takes its lock first, and the
    others go on to the next fold and read it back at the end (computing it themselves if that run stopped). The
    folds share their inner fits of model selection (``selection.shared_inner_fits``), in ``cache`` when given
    (under ``inner/<hash of the code>``)."""
    results: list[tuple[dict[str, Run], dict] | None] = [None] * len(cv_folds)
    kept: list[Path | None] = [None] * len(cv_folds)
    if cache is not None:
        inputs = _inputs_digest(bench, run, _code_digest())  # read once, not per fold
        for index, fold in enumerate(cv_folds):
            key = inputs.copy()
            key.update(json.dumps([fold.group, fold.held_out, fold.train]).encode())
            kept[index] = cache / f"{fold.group}-{key.hexdigest()[:20]}.json"
    with tempfile.TemporaryDirectory() as tmp, selection.shared_inner_fits(inner_fits_folder(cache, tmp)):
        for wait in (False, True):  # first the folds no other run is computing, then the rest
            for index, fold in enumerate(cv_folds):
                if results[index] is not None:
                    continue
                with (contextlib.nullcontext(True) if kept[index] is None
                      else locked(kept[index].with_suffix(".lock"), wait)) as mine:
                    if mine:
                        results[index] = _kept_fold_runs(bench, benchmark, run, fold, index, tmp, kept[index])
    return results


def _cross_validate(measured: Measured, cv_folds: list[Fold], results: list[tuple[dict[str, Run], dict]],
                    skipped: dict[str, str]) -> dict:
    """The ``cv`` part of the result: the estimators and every fold's runs (``results``, :func:`_fold_results`),
    the learned methods' extraction charged, on the held-out tasks; ``skipped``: why methods are missing from the
    fixed split."""
    task_ids = [t for fold in cv_folds for t in fold.held_out]
    at = measured.at(task_ids)
    runs = {name: Run(r.scores[at], r.seconds[at], r.extraction[at]) for name, r in measured.estimator_runs.items()}
    fold_runs = [measured.charged(r, info["depths"], fold.held_out)
                 for (r, info), fold in zip(results, cv_folds, strict=True)]
    infos = [info for _, info in results]
    for name in [n for n in fold_runs[0] if all(n in r for r in fold_runs)]:  # one missing from a fold: left out
        runs[name] = Run(*(np.concatenate([getattr(r[name], f) for r in fold_runs]) for f in Run._fields))
    if "prior" not in runs:
        skipped["prior"] = "a fold has no finetune or linear-probe history of every model on its training tasks"
    _, _, gt = measured.bench.history.matrix("finetune", task_ids, measured.bench.models)
    if (hindsight := _hindsight_run(gt)) is not None:
        runs[HINDSIGHT] = hindsight
    split = score_tasks(task_ids, gt, runs)
    add_group_intervals(split, {fold.group: fold.held_out for fold in cv_folds})
    split["skipped"] = {n: why for n, why in (skipped | split["skipped"]).items() if n not in split["methods"]}
    return {"groups": [fold.group for fold in cv_folds], "n_tasks": len(task_ids), "folds": infos, **split}


def _test_tasks(bench: bm.Benchmark) -> tuple[list[str], np.ndarray]:
    """The test tasks and their fine-tuning ground truth ``[T, M]``.

    Raises:
        ValueError: a test task has no finetune ground truth.
    """
    test = [t.id for t in bench.config.tasks if t.role == "test"]
    _, _, gt = bench.history.matrix("finetune", test, bench.models)
    missing = [t for t, row in zip(test, gt, strict=True) if np.isnan(row).all()]
    if missing:
        raise ValueError(f"test tasks {missing} have no finetune ground truth; build it with "
                         f"`python -m data.build_history --benchmark {bench.config.name} --kind finetune --role test`")
    return test, gt


def _cv_folds(bench: bm.Benchmark) -> list[Fold]:
    """The folds over every task with fine-tuning ground truth for two models or more, either role."""
    return folds(bench, measured_tasks(bench))


def _measure(bench: bm.Benchmark, names: list[str], task_ids: set[str], fresh_cache: bool
             ) -> tuple[Measured, dict[str, str], list[str]]:
    """The estimators ``names`` on every task of ``task_ids`` (in benchmark order); why estimators were skipped;
    their failures."""
    entries = list(bench.entries.values())
    tasks = [t for t in bench.config.tasks if t.id in task_ids]
    skipped = {}
    if not all(e.num_classes for e in entries):  # load_classifier's rule: a stored head has num_classes > 0
        skipped = {n: "needs the source model's class probabilities; some zoo members ship no classification head"
                   for n in names if n in NEEDS_SOURCE_HEAD}
    names = [n for n in names if n not in skipped]
    scores, seconds, extraction, failures = _estimator_runs(bench, entries, names, tasks, fresh_cache)
    estimator_runs = {n: Run(scores[n], seconds[n], extraction.sum(1)) for n in names}
    rows = {t.id: i for i, t in enumerate(tasks)}
    return Measured(bench, rows, estimator_runs, extraction), skipped, failures


def _load_checkpoint(bench: bm.Benchmark, checkpoint: str | Path, skipped: dict[str, str]) -> export.Exported | None:
    """The checkpoint for the benchmark's zoo; None, and why into ``skipped``, when it cannot be loaded for it.

    Raises:
        ValueError: the checkpoint tokenizes tasks with another general encoder than the benchmark.
    """
    try:
        exported = export.load(checkpoint, bench.manifest_path)
    except export.ExportError as err:
        skipped["ranker"] = skipped["ranker_rerank"] = str(err)
        return None
    if exported.config.general_encoder != bench.config.general_encoder:
        raise ValueError(f"checkpoint {checkpoint} tokenizes tasks with {exported.config.general_encoder}, "
                         f"benchmark {bench.config.name!r} with {bench.config.general_encoder}; pass a checkpoint "
                         "trained on this benchmark")
    return exported


def evaluate(benchmark: str = bm.DEFAULT_BENCHMARK, estimators: list[str] | None = None,
             checkpoint: str | Path | None = None, cv: bool = False, fresh_cache: bool = False,
             cv_cache: str | Path | None = None) -> dict:
    """The evaluation JSON (see DESIGN.md's contract): the fixed split, and ``cv`` when ``cv``; per-task wtau under
    ``per_task``. ``cv_cache``: keep each finished fold there and reuse it (``_fold_results``), so a stopped run
    continues where it was. ``checkpoint`` None: the benchmark's own (``export.benchmark_checkpoint``). The folds
    are trained first: they read no features, so another process may fill the features cache meanwhile.

    Raises:
        ValueError: unknown estimator, test tasks without finetune ground truth, a checkpoint of another general
            encoder, or (``cv``) tasks of a single group.
    """
    bench = bm.load_benchmark(benchmark)
    checkpoint = checkpoint or export.benchmark_checkpoint(bench.config.name)
    names = estimators or transfer.names()
    for name in names:
        transfer.get(name)  # an unknown name fails here, before any extraction
    test, gt = _test_tasks(bench)
    cv_folds = _cv_folds(bench) if cv else []
    skipped: dict[str, str] = {}
    exported = _load_checkpoint(bench, checkpoint, skipped)
    run = None if exported is None else exported.config.run
    fold_results = _fold_results(bench, benchmark, run, cv_folds, None if cv_cache is None else Path(cv_cache))
    measured, not_measured, failures = _measure(bench, names, {t for f in cv_folds for t in f.held_out} | set(test),
                                                fresh_cache)
    skipped = not_measured | skipped
    at = measured.at(test)
    runs = {n: Run(r.scores[at], r.seconds[at], r.extraction[at]) for n, r in measured.estimator_runs.items()}
    if exported is not None:
        runs |= measured.charged(*_ranker_runs(bench, exported.net, exported.config.rerank_k, test), test)
    prior = _prior_run(bench, bench.task_ids("train"), len(test))
    if prior is None:
        skipped["prior"] = "needs finetune or linear-probe history of every model on training tasks"
    else:
        runs["prior"] = prior[1]
    if (hindsight := _hindsight_run(gt)) is None:
        skipped[HINDSIGHT] = "needs two test tasks or more with fine-tuning ground truth for every model"
    else:
        runs[HINDSIGHT] = hindsight
    with tempfile.TemporaryDirectory() as tmp:
        fitted, depths, not_fitted = _fitted_runs(benchmark, bench, bench.task_ids("train"), _val_tasks(run), test,
                                                  tmp)
    runs |= measured.charged(fitted, depths, test)
    skipped |= not_fitted
    fixed = score_tasks(test, gt, runs)
    result = {
        "benchmark": bench.config.name,
        "prior_kind": prior and prior[0],
        "n_test_tasks": len(test),
        "n_models": len(bench.models),
        "fresh_cache": fresh_cache,
        "checkpoint": str(checkpoint),
        "estimators": list(measured.estimator_runs) if estimators else None,  # None: every registered one
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "95% percentile, over tasks"},
        "methods": fixed["methods"],
        "skipped": skipped | fixed["skipped"],
        "failures": failures,
        "per_task": fixed["per_task"],
        "per_task_regret": fixed["per_task_regret"],
    }
    if cv:
        result["cv"] = _cross_validate(measured, cv_folds, fold_results, dict(skipped))
    return result
