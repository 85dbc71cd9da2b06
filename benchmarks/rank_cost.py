"""What rank.py costs against all-model LogME on the same images, and what re-ranking buys, on the real zoo.

Part 1, side by side in one run, per dataset, each in a fresh features cache (so every extraction is real), with
model loading included on both sides and Python imports on neither:
- ``rank (k=0)``: ``export.load`` + ``Pipeline`` (the general encoder) + ranking without re-ranking;
- ``rank (k=K)``: the same with the checkpoint's re-ranking depth (its top-K models embed the images too);
- ``LogME, all M``: every zoo model loaded, its features extracted, LogME computed.
Part 2: mean weighted tau (``scipy.stats.weightedtau(gt, score, rank=None)``) against fine-tuning ground truth for
re-ranking depths k = 0..M, on the checkpoint's validation tasks (where its k was chosen) and on the benchmark's
test tasks (never used for any choice). Task statistics come from the benchmark's stats files.

Run:
    python benchmarks/rank_cost.py --plot benchmarks/rank_cost.png     # demo folder and digits: about 5 minutes
    python benchmarks/rank_cost.py --data path/to/imagefolder
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ranker import transfer
from ranker.learn import episodes, selection
from ranker.serve import export
from ranker.serve.pipeline import Pipeline
from ranker.tasks import benchmark as bm
from ranker.tasks import datasets, features, loaders
from ranker.zoo import manifest as zoo

ROOT = Path(__file__).resolve().parent.parent


def time_rank(task: datasets.Task, k: int) -> float:
    """Seconds to load the ranker and rank ``task`` with re-ranking depth ``k``, features extracted afresh."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        Pipeline(export.load(), k=k, cache_dir=cache).rank(task)
        return time.perf_counter() - start


def time_logme(task: datasets.Task, zoo_entries: list[zoo.ZooEntry]) -> float:
    """Seconds to load every model of ``zoo_entries``, extract its features of ``task`` afresh and compute LogME."""
    labels = torch.as_tensor(task.labels)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        for entry in zoo_entries:
            transfer.get("logme")(features.extract(zoo.load_extractor(entry), task, cache_dir=cache,
                                                   progress=False), labels)
        return time.perf_counter() - start


def tau_by_depth(exported: export.Exported, bench: bm.Benchmark, task_ids: list[str]) -> list[float]:
    """Mean weighted tau (rank=None) over ``task_ids`` for each re-ranking depth k = 0..M."""
    return selection.rerank_sweep(exported.net, episodes.load_episodes(bench, task_ids, ["finetune"]))


def plot(val: list[float], test: list[float], chosen: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(val)), val, marker="o", label="validation tasks")
    ax.plot(range(len(test)), test, marker="s", label="test tasks")
    ax.axvline(chosen, color="gray", linestyle="--", label=f"k chosen on validation ({chosen})")
    ax.set_xlabel("re-ranking depth k (models embedding the data themselves)")
    ax.set_ylabel("mean weighted tau vs fine-tuning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(ROOT / "data" / "demo"), "digits"],
                        help="image datasets (folders, .npz or real dataset names)")
    parser.add_argument("--plot", type=Path, help="write weighted tau vs k (PNG) here")
    args = parser.parse_args()
    exported = export.load()
    k, m = exported.config.rerank_k, len(exported.config.models)
    print(f"CPU threads: {torch.get_num_threads()} (of {os.cpu_count()} cores); CUDA: {torch.cuda.is_available()}\n")
    print(f"| dataset | images | rank (k=0) s | rank (k={k}) s | LogME, all {m} models s | LogME / rank (k=0) |")
    print("|---|---|---|---|---|---|")
    for spec in args.data:
        task = loaders.load_dataset(spec)
        plain, reranked, logme = time_rank(task, 0), time_rank(task, k), time_logme(task, exported.zoo.models)
        print(f"| {task.id} | {len(task)} | {plain:.1f} | {reranked:.1f} | {logme:.1f} | {logme / plain:.1f}x |",
              flush=True)
    bench = bm.load_benchmark(exported.config.run.data.benchmark)
    val_tasks = exported.config.run.data.val_tasks or bench.validation_tasks()
    val = tau_by_depth(exported, bench, val_tasks)
    test = tau_by_depth(exported, bench, bench.task_ids("test"))
    print(f"\nmean weighted tau (rank=None) vs re-ranking depth k; the checkpoint's k={k} was chosen on validation")
    print("| k | " + " | ".join(str(i) for i in range(m + 1)) + " |")
    print("|---|" + "---|" * (m + 1))
    print(f"| validation ({len(val_tasks)} tasks) | " + " | ".join(f"{t:.3f}" for t in val)
          + " |")
    print(f"| test ({len(bench.task_ids('test'))} tasks) | " + " | ".join(f"{t:.3f}" for t in test) + " |")
    print(f"\nre-ranking gain at k={k}: validation {val[k] - val[0]:+.3f}, test {test[k] - test[0]:+.3f}; "
          f"best test k={int(np.argmax(test))} ({max(test):.3f}, not a choice: test tasks choose nothing)")
    if args.plot:
        plot(val, test, k, args.plot)


if __name__ == "__main__":
    main()
