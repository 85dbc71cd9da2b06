"""Evaluates every ranking method on a benchmark's test tasks against fine-tuning ground truth.

For each test task the training part is embedded by every zoo model (timed, in a fresh temporary cache, so
extraction cost is real), every transferability estimator scores every model on those features, and the
scores over the zoo are compared with the fine-tuning accuracies: weighted Kendall tau in both variants
(``ranker.learn.metrics``) and top-1 regret, averaged over tasks. ``prior`` ranks by mean historical accuracy on
the training tasks (fine-tuning where every model has some, else linear probe; the JSON's ``prior_kind`` says
which): the same ranking for every task, the floor a learned ranker must beat. An estimator
that raises on a degenerate (task, model) is listed under ``failures`` and that task is left out of its means
(``n_tasks`` says over how many tasks each method was averaged).

The learned ranker (an exported checkpoint, ``--checkpoint``) is evaluated as ``ranker`` (general-encoder
prototypes only) and ``ranker_rerank`` (its top k re-scored with their own prototypes, k from the checkpoint);
their extraction seconds are the general encoder's and, for re-ranking, those of the top-k models.

LEEP and NCE need the source model's class probabilities, so they are evaluated only when every zoo model
ships a classification head (their seconds include that head's forward pass); otherwise the JSON says why
they were skipped.

Run:
    python -m ranker.evaluate --json runs/eval.json --report data/benchmarks/offline/EVALUATION.md \
        --plot data/benchmarks/offline/evaluation.png
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ranker import transfer
from ranker.files import write_atomic
from ranker.learn import lit
from ranker.learn.metrics import top1_regret, weighted_tau
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import features
from ranker.zoo import manifest as zoo

NEEDS_SOURCE_HEAD = ("leep", "nce")
PRIOR_KINDS = ("finetune", "linear_probe")  # the prior averages the first kind measured for every model


@torch.inference_mode()
def source_probs(classifier: torch.nn.Module, transform, task) -> torch.Tensor:
    """Class probabilities ``[N, Z]`` of a member's own (source) head (``zoo.load_classifier``) on ``task``'s images."""
    device = next(classifier.parameters()).device
    chunks = []
    for start in range(0, len(task), 32):
        batch = torch.stack([transform(task.image(i)) for i in range(start, min(start + 32, len(task)))])
        chunks.append(classifier(batch.to(device)).softmax(-1).double().cpu())
    return torch.cat(chunks)


def _estimator_runs(bench: bm.Benchmark, entries: list[zoo.ZooEntry], names: list[str], test: list[bm.TaskSpec]):
    """Per estimator: scores ``[T, M]`` (NaN where it failed) and seconds ``[T]``; extraction seconds ``[T, M]``;
    the failures as "task · model: message" lines."""
    scores = {n: np.full((len(test), len(entries)), np.nan) for n in names}
    seconds = {n: np.zeros(len(test)) for n in names}
    extraction, failures = np.zeros((len(test), len(entries))), []
    parts = [bm.task_parts(spec, bench.config)[0] for spec in test]
    with tempfile.TemporaryDirectory() as cache:
        for j, entry in enumerate(tqdm(entries, desc="models", unit="model")):
            extractor = zoo.load_extractor(entry)
            needs_probs = any(n in NEEDS_SOURCE_HEAD for n in names)
            if needs_probs:
                classifier = zoo.load_classifier(entry).to(features.best_device())
                transform = zoo.entry_transform(entry)
            for i, part in enumerate(parts):
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
                        failures.append(f"{name}: {test[i].id} · {entry.name}: {err}")
                    seconds[name][i] += time.perf_counter() - start + (probs_seconds if extra else 0.0)
    return scores, seconds, extraction, failures


def _summary(gt: np.ndarray, scores: np.ndarray, seconds: np.ndarray, extraction: np.ndarray) -> dict[str, float]:
    """Means over the tasks where the method scored every model (``n_tasks`` of them); ``extraction`` ``[T]`` is
    the seconds of feature extraction the method needed per task."""
    ok = ~np.isnan(scores).any(axis=1)
    if not ok.any():
        raise ValueError("the method failed on every test task")
    gt, scores = gt[ok], scores[ok]
    return {
        "wtau": float(np.mean([weighted_tau(g, s, "rank_none") for g, s in zip(gt, scores, strict=True)])),
        "wtau_sym": float(np.mean([weighted_tau(g, s, "symmetric") for g, s in zip(gt, scores, strict=True)])),
        "regret": float(np.mean([top1_regret(g, s) for g, s in zip(gt, scores, strict=True)])),
        "seconds_per_task": float(np.mean(seconds[ok])),
        "seconds_per_task_with_features": float(np.mean(seconds[ok] + extraction[ok])),
        "n_tasks": int(ok.sum()),
    }


def _ranker_runs(bench: bm.Benchmark, exported: export.Exported, test: list[bm.TaskSpec], extraction: np.ndarray
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``ranker`` and ``ranker_rerank``: scores ``[T, M]``, scoring seconds ``[T]`` and the seconds ``[T]`` of
    the extraction they need (the general encoder; re-ranking adds the top-k models' own features, measured by
    ``_estimator_runs`` as ``extraction`` ``[T, M]``). Task statistics come from the benchmark's stats files,
    which hold the same general-encoder and per-model prototypes of each task's training part."""
    episodes = lit.load_episodes(bench, [t.id for t in test], ["finetune"])  # the targets stay unread here
    general = bench.models.index(exported.config.general_encoder)
    k = exported.config.rerank_k
    out = {}
    for name, depth in (("ranker", 0), ("ranker_rerank", k)):
        scores, seconds, needed = np.zeros(extraction.shape), np.zeros(len(test)), np.zeros(len(test))
        for i, episode in enumerate(episodes):
            batch = lit.collate([episode])
            start = time.perf_counter()
            ranked = exported.net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], depth)[0]
            seconds[i] = time.perf_counter() - start
            scores[i] = ranked.numpy()
            top = set(ranked.topk(depth).indices.tolist())  # rerank keeps the plain top k on top: those were re-scored
            needed[i] = extraction[i, sorted(top | {general})].sum()
        out[name] = (scores, seconds, needed)
    return out


def evaluate(benchmark: str = bm.DEFAULT_BENCHMARK, estimators: list[str] | None = None,
             checkpoint: str | Path = export.DEFAULT_CHECKPOINT) -> dict:
    """The evaluation JSON (see DESIGN.md's contract); per-task values are under ``per_task``.

    Raises:
        ValueError: unknown estimator, or test tasks without finetune ground truth.
    """
    bench = bm.load_benchmark(benchmark)
    entries = list(bench.entries.values())
    models = bench.models
    names = estimators or transfer.names()
    for name in names:
        transfer.get(name)  # an unknown name fails here, before any extraction
    test = [t for t in bench.config.tasks if t.role == "test"]
    _, _, gt = bench.history.matrix("finetune", [t.id for t in test], models)
    missing = [t.id for t, row in zip(test, gt, strict=True) if np.isnan(row).all()]
    if missing:
        raise ValueError(f"test tasks {missing} have no finetune ground truth; build it with "
                         f"`python -m data.build_history --benchmark {bench.config.name} --kind finetune --role test`")
    skipped = {}
    if not all(e.num_classes for e in entries):  # load_classifier's rule: a stored head has num_classes > 0
        skipped = {n: "needs the source model's class probabilities; some zoo members ship no classification head"
                   for n in names if n in NEEDS_SOURCE_HEAD}
    names = [n for n in names if n not in skipped]
    scores, seconds, extraction, failures = _estimator_runs(bench, entries, names, test)
    methods = {}
    for name in names:
        try:
            methods[name] = _summary(gt, scores[name], seconds[name], extraction.sum(1))
        except ValueError as err:
            skipped[name] = str(err)
    try:
        exported = export.load(checkpoint, bench.manifest_path)
    except export.ExportError as err:
        skipped["ranker"] = skipped["ranker_rerank"] = str(err)
    else:
        if exported.config.general_encoder != bench.config.general_encoder:
            raise ValueError(f"checkpoint {checkpoint} tokenizes tasks with {exported.config.general_encoder}, "
                             f"benchmark {bench.config.name!r} with {bench.config.general_encoder}; pass a checkpoint "
                             "trained on this benchmark")
        runs = _ranker_runs(bench, exported, test, extraction)
        for name, (ranked, ranked_seconds, ranked_extraction) in runs.items():
            scores[name] = ranked
            methods[name] = _summary(gt, ranked, ranked_seconds, ranked_extraction)
    prior_kind = None
    for kind in PRIOR_KINDS:
        _, _, past = bench.history.matrix(kind, bench.task_ids("train"), models)
        if past.size and not np.isnan(past).all(axis=0).any():
            prior_kind, scores["prior"] = kind, np.tile(np.nanmean(past, axis=0), (len(test), 1))
            methods["prior"] = _summary(gt, scores["prior"], np.zeros(len(test)), np.zeros(len(test)))
            break
    else:
        skipped["prior"] = "needs finetune or linear-probe history of every model on training tasks"
    return {
        "benchmark": bench.config.name,
        "prior_kind": prior_kind,
        "n_test_tasks": len(test),
        "n_models": len(models),
        "methods": methods,
        "skipped": skipped,
        "failures": failures,
        "per_task": {
            name: {t.id: weighted_tau(g, s) for t, g, s in zip(test, gt, scores[name], strict=True)
                   if not np.isnan(s).any()}
            for name in methods
        },
    }


def markdown(result: dict) -> str:
    """A table of the evaluation, best ``wtau`` first."""
    rows = sorted(result["methods"].items(), key=lambda item: -item[1]["wtau"])
    lines = [
        f"# Evaluation on `{result['benchmark']}`: {result['n_test_tasks']} test tasks x {result['n_models']} models",
        "",
        "Regenerate: `python -m ranker.evaluate --json runs/eval.json --report "
        f"data/benchmarks/{result['benchmark']}/EVALUATION.md --plot data/benchmarks/{result['benchmark']}/"
        "evaluation.png`. Ground truth: `finetune` accuracy. "
        "wtau: mean over tasks of `scipy.stats.weightedtau(gt, score, rank=None)` (Model Spider's table); "
        "wtau_sym: scipy's default weighting; regret: best accuracy minus that of the top-ranked model (points). "
        f"prior: mean {result['prior_kind'] or '(none)'} accuracy of each model on the training tasks.",
        "",
        "| method | wtau | wtau_sym | regret | s/task (features given) | s/task (incl. extraction, all models) "
        "| tasks |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['wtau']:.3f} | {m['wtau_sym']:.3f} | {m['regret']:.2f} | "
                     f"{m['seconds_per_task']:.3f} | {m['seconds_per_task_with_features']:.2f} | {m['n_tasks']} |")
    for name, why in result["skipped"].items():
        lines.append(f"\n- `{name}` not evaluated: {why}.")
    if result["failures"]:
        lines += ["", f"Estimator failures ({len(result['failures'])}; those tasks are out of that method's means):"]
        lines += [f"- {f}" for f in result["failures"]]
    lines.append("\n![weighted tau per method](evaluation.png)")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path | io.BytesIO) -> None:
    """Horizontal bars of both weighted-tau variants per method, best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["methods"].items(), key=lambda item: item[1]["wtau"])
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    ax.barh(y + 0.2, [m["wtau"] for _, m in rows], height=0.4, label="wtau (rank=None, Model Spider)")
    ax.barh(y - 0.2, [m["wtau_sym"] for _, m in rows], height=0.4, label="wtau (symmetric, scipy default)")
    ax.set_yticks(y, [name for name, _ in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"mean weighted Kendall tau vs fine-tuning, {result['n_test_tasks']} test tasks")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    parser.add_argument("--json", type=Path, help="write the result JSON here")
    parser.add_argument("--report", type=Path, help="write the markdown table here")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG) of both tau variants here")
    parser.add_argument("--estimators", nargs="*", help="registry names; default: all")
    parser.add_argument("--checkpoint", type=Path, default=export.DEFAULT_CHECKPOINT,
                        help="exported ranker evaluated as `ranker` and `ranker_rerank` (skipped if unusable)")
    args = parser.parse_args()
    try:
        result = evaluate(args.benchmark, args.estimators, args.checkpoint)
    except ValueError as err:  # unknown benchmark or estimator, missing ground truth: the message says the fix
        print(f"evaluate: {err}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2).encode())
    if args.report:
        write_atomic(args.report, markdown(result).encode())
    if args.plot:
        buffer = io.BytesIO()
        plot(result, buffer)
        write_atomic(args.plot, buffer.getvalue())
    print(markdown(result))


if __name__ == "__main__":
    main()
