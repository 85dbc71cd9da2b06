"""How much the fine-tuning recipe (input size, steps) decides whether the best model depends on the task.

Benchmark v2's ground truth uses one recipe for every pair; issue 13 asks for the largest input size and step
count the budget allows, chosen by how task-dependent the resulting rankings are. This fine-tunes the chosen
models on the chosen tasks under each recipe variant (seed 0, ``ranker.tune.finetune``), one CSV row per
pair in ``--out`` (a stopped run resumes), then prints per variant: the mean weighted tau between two tasks'
rows (1: every task ranks the models alike) and the best constant ranking in hindsight
(``ranker.evaluate.best_constant``).

Run (the figure in data/benchmarks/v2/README.md):
    python benchmarks/recipe_dependence.py --variants 64x40 128x40 \\
        --tasks clip-nature-3way-15shot-02 clip-people-3way-5shot-00 digits-10way fmnist-c789
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ranker import evaluate
from ranker.files import write_atomic
from ranker.learn.metrics import weighted_tau
from ranker.tasks import benchmark as bm
from ranker.tune.finetune import finetune

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="v2")
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--models", nargs="*", help="default: every member but the two VGG16 trunks (the cost)")
    parser.add_argument("--variants", nargs="+", default=["64x40", "128x40"], help="<max input px>x<steps>")
    parser.add_argument("--out", type=Path, default=HERE / "recipe_dependence.csv")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    models = args.models or [m for m in bench.models if bench.entries[m].trunk_layers is None]
    specs = {t.id: t for t in bench.config.tasks}
    done = {}
    if args.out.is_file():
        with args.out.open() as f:
            done = {(r["variant"], r["task"], r["model"]): float(r["accuracy"]) for r in csv.DictReader(f)}
    todo = [(v, t, m) for v in args.variants for t in args.tasks for m in models if (v, t, m) not in done]
    for variant, task, model in tqdm(todo, desc="recipes", unit="pair"):
        size, steps = (int(x) for x in variant.split("x"))
        recipe = dataclasses.replace(bench.config.finetune, max_input_size=size, steps=steps)
        train, test = bm.task_parts(specs[task], bench.config)
        done[variant, task, model] = finetune(bench.entries[model], train.task, test.task, recipe)[0]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=["variant", "task", "model", "accuracy"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({"variant": v, "task": t, "model": m, "accuracy": f"{a:.4f}"} for (v, t, m), a in done.items())
        write_atomic(args.out, text.getvalue().encode())  # after each pair, atomically: a kill loses that pair only
    print(f"{len(args.tasks)} tasks x {len(models)} models; weighted tau rank=None")
    print(f"{'variant':>8s}  {'between tasks':>13s}  {'best constant':>13s}  best model per task")
    for variant in args.variants:
        gt = np.array([[done[variant, t, m] for m in models] for t in args.tasks])
        between = np.mean([weighted_tau(a, b) for i, a in enumerate(gt) for j, b in enumerate(gt)
                           if i != j])
        best = ", ".join(models[j] for j in gt.argmax(1))
        print(f"{variant:>8s}  {between:13.3f}  {evaluate.best_constant(gt)[1]:13.3f}  {best}")


if __name__ == "__main__":
    main()
