"""Each zoo member's backbone learning rate and head input for a benchmark's fine-tuning recipe, chosen on training
tasks.

One setting does not suit every member: at 2e-4 some trunks (BlazePose's, DINOv2's) are wrecked within a few steps
and fine-tune to a constant prediction while the ImageNet CNNs thrive, and BlazePose's pooled features vary between
images by 1-2% of their norm, too little for a new head to read in 30 steps unless they are standardized. This
fine-tunes every member on the given training tasks under the benchmark's recipe with each candidate in turn (a rate
of ``--lrs``, with the head reading the plain or the standardized features: ``lrs: {member: rate}``, ``head_norm:
[member]``; seed 0, ``ranker.tune.finetune``), one CSV row per run in ``--out`` (a stopped run resumes; ``--shard``
splits the runs over processes writing one file; the recipe's own setting is read from the history where the
benchmark has measured it), then prints each member's mean accuracy per candidate and the candidate with the highest
mean (a tie goes to the one listed first, the recipe's own setting first of all), and the recipe's ``lrs`` and
``head_norm`` entries for benchmark.yaml. Test tasks are refused: nothing of the ground truth is chosen on them.

Run (the choice in data/benchmarks/v3/README.md):
    OMP_NUM_THREADS=1 python benchmarks/member_lr.py --benchmark v3 --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/member_lr.py --benchmark v3 --shard 1/2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data.build_history import shard_arg
from ranker.files import write_atomic
from ranker.tasks import benchmark as bm
from ranker.tune.finetune import finetune

HERE = Path(__file__).resolve().parent
TASKS = ("tux-made-4way-10shot-04", "clip-things-5way-20shot-01")
"""v3's default: two colour training tasks of two sources, with 159 and 100+ held-out images."""
LRS = (2e-4, 6e-5, 2e-5)
"""The candidate backbone learning rates (``--lrs``)."""
COLUMNS = ("lr", "head_norm", "task", "model", "accuracy", "seconds")
Candidate = tuple[float, bool]
"""(backbone learning rate, whether the head reads standardized features)."""


def read(path: Path) -> dict[tuple[Candidate, str, str], float]:
    """((lr, head_norm), task, model) -> accuracy of the runs in ``path`` (empty when there is none)."""
    if not path.is_file():
        return {}
    with path.open() as f:
        return {((float(r["lr"]), r["head_norm"] == "1"), r["task"], r["model"]): float(r["accuracy"])
                for r in csv.DictReader(f)}


def measured(bench: bm.Benchmark, tasks: list[str]) -> dict[tuple[Candidate, str, str], float]:
    """The recipe's own setting (its lr, plain head) where the history holds its seed-0 fine-tuning of the pair."""
    recipe = bench.config.finetune
    return {((recipe.lr, False), r.task, r.model): r.value for r in bench.history.records("finetune")
            if r.task in tasks and r.seed == 0 and r.recipe == recipe.name and r.model not in recipe.lrs
            and r.model not in recipe.head_norm}


def add(path: Path, row: dict[str, str]) -> None:
    """Appends one run to ``path`` under a lock on its folder, so processes sharing the file keep each other's rows."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        rows = list(csv.DictReader(path.open())) if path.is_file() else []
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + [row])
        write_atomic(path, text.getvalue().encode())
    finally:
        os.close(folder)  # releases the lock


def choose(runs: dict[tuple[Candidate, str, str], float], candidates: list[Candidate], tasks: list[str], model: str
           ) -> tuple[Candidate, list[float]]:
    """The candidate with the highest mean accuracy over ``tasks`` (the first on a tie), and the means per one."""
    means = [float(np.mean([runs[c, t, model] for t in tasks])) for c in candidates]
    return candidates[int(np.argmax(means))], means


def candidate_list(lrs: list[float], base: bm.FinetuneRecipe) -> list[Candidate]:
    """Every rate of ``lrs`` with a plain and a standardized head; the recipe's own setting first, then by rate."""
    return sorted({(lr, norm) for lr in lrs for norm in (False, True)},
                  key=lambda c: (c != (base.lr, False), -c[0], c[1]))


def recipe_fields(chosen: dict[str, Candidate], base: bm.FinetuneRecipe) -> tuple[dict[str, float], list[str]]:
    """The recipe's ``lrs`` (members whose chosen rate is not ``base.lr``) and ``head_norm`` for the choice."""
    return ({m: lr for m, (lr, _) in chosen.items() if lr != base.lr},
            [m for m, (_, norm) in chosen.items() if norm])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="v3")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="training tasks (default: %(default)s)")
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LRS), help="candidate rates")
    parser.add_argument("--models", nargs="*", help="default: every member")
    parser.add_argument("--shard", type=shard_arg, default=(0, 1), help="i/n: this process's share of the runs")
    parser.add_argument("--out", type=Path, help="default: benchmarks/member_lr_<benchmark>.csv")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    specs = {t.id: t for t in bench.config.tasks}
    if bad := [t for t in args.tasks if t not in specs or specs[t].role != "train"]:
        sys.exit(f"member_lr: {bad} are not training tasks of {bench.config.name}; choose on training tasks only")
    models = args.models or bench.models
    out = args.out or HERE / f"member_lr_{bench.config.name}.csv"
    base = bench.config.finetune
    candidates = candidate_list(args.lrs, base)
    every = [(c, t, m) for t in args.tasks for m in models for c in candidates]
    known = measured(bench, args.tasks)
    done = known | read(out)
    todo = [run for run in every[args.shard[0]::args.shard[1]] if run not in done]
    for (lr, norm), task, model in (bar := tqdm(todo, desc="member settings", unit="run")):
        if ((lr, norm), task, model) in read(out):  # another process measured it meanwhile
            continue
        bar.set_postfix_str(f"{model} · {lr:g}{' · norm' * norm} · {task}")
        recipe = dataclasses.replace(base, lrs={model: lr}, head_norm=[model] if norm else [])
        train, test = bm.task_parts(specs[task], bench.config)
        start = time.time()
        accuracy = finetune(bench.entries[model], train.task, test.task, recipe)[0]
        add(out, {"lr": f"{lr:g}", "head_norm": str(int(norm)), "task": task, "model": model,
                  "accuracy": f"{accuracy:.4f}", "seconds": f"{time.time() - start:.1f}"})
    done = known | read(out)
    if missing := [run for run in every if run not in done]:
        print(f"{len(missing)} runs still missing (other shards?); rerun without --shard for the choice")
        return
    print(f"{bench.config.name}, recipe {base.name}: mean accuracy over {len(args.tasks)} training tasks per backbone "
          "learning rate, the head reading plain or standardized (+norm) features")
    print(f"{'member':28s}" + "".join(f"{f'{lr:g}' + '+norm' * norm:>13s}" for lr, norm in candidates) + "   chosen")
    chosen = {}
    for model in models:
        chosen[model], means = choose(done, candidates, args.tasks, model)
        lr, norm = chosen[model]
        print(f"{model:28s}" + "".join(f"{m:13.1f}" for m in means) + f"   {lr:g}{'+norm' * norm}")
    lrs, head_norm = recipe_fields(chosen, base)
    print("lrs: {" + ", ".join(f"{m}: {lr:g}" for m, lr in lrs.items()) + "}, head_norm: [" + ", ".join(head_norm)
          + "]")


if __name__ == "__main__":
    main()
