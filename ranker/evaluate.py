"""Evaluates every ranking method on a benchmark's test tasks against fine-tuning ground truth.

For each test task the training part is embedded by every zoo model (timed, in a fresh temporary cache, so
extraction cost is real), every transferability estimator scores every model on those features, and the
scores over the zoo are compared with the fine-tuning accuracies: weighted Kendall tau in both variants
(``ranker.metrics``) and top-1 regret, averaged over tasks. ``prior`` ranks by mean linear-probe accuracy on
the training tasks (the same ranking for every task); it is the floor a learned ranker must beat.

LEEP and NCE need the source model's class probabilities, so they are evaluated only when every zoo model
ships a classification head; otherwise the JSON says why they were skipped.

Run:
    python -m ranker.evaluate --json runs/eval.json --report data/benchmarks/offline/EVALUATION.md \
        --plot data/benchmarks/offline/evaluation.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ranker import benchmark as bm
from ranker import features, transfer, zoo
from ranker.metrics import top1_regret, weighted_tau

NEEDS_SOURCE_HEAD = ("leep", "nce")


def _estimator_runs(bench: bm.Benchmark, entries: list[zoo.ZooEntry], names: list[str], test: list[bm.TaskSpec]):
    """Scores ``[T, M]`` per estimator, estimator seconds ``[T]`` per estimator, extraction seconds ``[T]``."""
    scores = {n: np.full((len(test), len(entries)), np.nan) for n in names}
    seconds = {n: np.zeros(len(test)) for n in names}
    extraction = np.zeros(len(test))
    parts = [bm.task_parts(spec, bench.config)[0] for spec in test]
    with tempfile.TemporaryDirectory() as cache:
        for j, entry in enumerate(tqdm(entries, desc="models", unit="model")):
            extractor = zoo.load_extractor(entry)
            for i, part in enumerate(parts):
                start = time.perf_counter()
                feats = features.extract(extractor, part.task, cache_dir=cache, progress=False)
                extraction[i] += time.perf_counter() - start
                labels = torch.as_tensor(part.labels)
                for name in names:
                    start = time.perf_counter()
                    scores[name][i, j] = transfer.get(name)(feats, labels)
                    seconds[name][i] += time.perf_counter() - start
    return scores, seconds, extraction


def _summary(gt: np.ndarray, scores: np.ndarray, seconds: np.ndarray) -> dict[str, float]:
    return {
        "wtau": float(np.mean([weighted_tau(g, s, "rank_none") for g, s in zip(gt, scores, strict=True)])),
        "wtau_sym": float(np.mean([weighted_tau(g, s, "symmetric") for g, s in zip(gt, scores, strict=True)])),
        "regret": float(np.mean([top1_regret(g, s) for g, s in zip(gt, scores, strict=True)])),
        "seconds_per_task": float(np.mean(seconds)),
    }


def evaluate(benchmark: str = bm.DEFAULT_BENCHMARK, estimators: list[str] | None = None) -> dict:
    """The evaluation JSON (see DESIGN.md's contract); per-task values are under ``per_task``."""
    bench = bm.load_benchmark(benchmark)
    entries = zoo.load_manifest(bench.manifest_path).models
    models = bench.models
    test = [t for t in bench.config.tasks if t.role == "test"]
    _, _, gt = bench.history.matrix("finetune", [t.id for t in test], models)
    if np.isnan(gt).all(axis=1).any():
        missing = [t.id for t, row in zip(test, gt, strict=True) if np.isnan(row).all()]
        raise ValueError(f"test tasks {missing} have no finetune ground truth; build it with "
                         "`python -m data.build_history --kind finetune --role test`")
    names = estimators or transfer.names()
    heads = all(e.num_classes and e.trunk_layers is None for e in entries)
    skipped = {} if heads else {
        n: "needs the source model's class probabilities; some zoo members ship no classification head"
        for n in names if n in NEEDS_SOURCE_HEAD
    }
    names = [n for n in names if n not in skipped]
    scores, seconds, extraction = _estimator_runs(bench, entries, names, test)
    methods = {}
    for name in names:
        methods[name] = _summary(gt, scores[name], seconds[name])
        methods[name]["seconds_per_task_with_features"] = float(np.mean(seconds[name] + extraction))
    _, _, probe = bench.history.matrix("linear_probe", bench.task_ids("train"), models)
    prior = np.nanmean(probe, axis=0)
    methods["prior"] = _summary(gt, np.tile(prior, (len(test), 1)), np.zeros(len(test)))
    methods["prior"]["seconds_per_task_with_features"] = 0.0
    return {
        "benchmark": bench.config.name,
        "n_test_tasks": len(test),
        "n_models": len(models),
        "methods": methods,
        "skipped": skipped,
        "per_task": {
            name: {t.id: weighted_tau(g, s) for t, g, s in zip(test, gt, scores[name], strict=True)} for name in names
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
        "wtau_sym: scipy's default weighting; regret: best accuracy minus that of the top-ranked model (points).",
        "",
        "| method | wtau | wtau_sym | regret | s/task (features given) | s/task (incl. extraction, all models) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['wtau']:.3f} | {m['wtau_sym']:.3f} | {m['regret']:.2f} | "
                     f"{m['seconds_per_task']:.3f} | {m['seconds_per_task_with_features']:.2f} |")
    for name, why in result["skipped"].items():
        lines.append(f"\n- `{name}` not evaluated: {why}.")
    lines.append("\n![weighted tau per method](evaluation.png)")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    parser.add_argument("--json", type=Path, help="write the result JSON here")
    parser.add_argument("--report", type=Path, help="write the markdown table here")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG) of both tau variants here")
    parser.add_argument("--estimators", nargs="*", help="registry names; default: all")
    args = parser.parse_args()
    result = evaluate(args.benchmark, args.estimators)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.report:
        args.report.write_text(markdown(result))
    if args.plot:
        plot(result, args.plot)
    print(markdown(result))


if __name__ == "__main__":
    main()
