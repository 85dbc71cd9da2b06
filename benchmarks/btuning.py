"""Plain fine-tuning vs B-Tuning of the same target, same recipe, on the benchmark's test tasks.

Both runs of a pair use the benchmark's ``finetune`` recipe with the same seed (plain: ``ranker.tune.finetune``,
the ground truth's own function; B-Tuning: ``ranker.tune.btuning``, which only adds the teachers' term, lambda = 100,
T = 0.1 as the authors). A setting is a target and a pool of candidate teachers; on each task the teachers are
the K = 3 pool members with the highest LogME score on the task's training part (B-Tuning's top-K by LogME; no
held-out label is looked at, and no B-Tuning parameter was tuned here):

    homogeneous    tiny_resnet_fmnist <- the other 32 px members pre-trained from scratch on Fashion-/Animal-MNIST
    heterogeneous  tiny_resnet_fmnist <- the ImageNet members (EfficientNet-Lite0/1/2, MobileNetV2) and CRAFT VGG16-BN
    imagenet       mobilenetv2_100    <- the other ImageNet members and CRAFT VGG16-BN

The gain is B-Tuning's held-out accuracy minus plain fine-tuning's, in points, per (task, seed); the table gives its
mean with a 95% paired t-interval over those pairs, and how many tasks gained or lost on average over the seeds.
Extra seconds per run = the teachers' preparation (the LogME fits of target and teachers from features extracted cold,
once per task; seed-independent) + B-Tuning's training - plain training. Per-run rows go to ``--csv``.

Run (12 minutes here for everything: 13 tasks x 3 seeds x 3 settings, one thread on 2 busy CPU cores):
    OMP_NUM_THREADS=1 python benchmarks/btuning.py
    python benchmarks/btuning.py --settings homogeneous --tasks digits-10way lfw-2way --seeds 0 1
    python benchmarks/btuning.py --role train --tradeoff 1 --steps 200 --csv /tmp/bt.csv   # other settings: train tasks
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from ranker.files import write_atomic
from ranker.tasks import benchmark as bm
from ranker.tune import btuning
from ranker.tune.finetune import finetune

K = 3
SMALL = ("tiny_resnet_amnist", "tiny_convnext_amnist", "tiny_vit_amnist", "tiny_efficientnet_amnist",
         "mobilenetv3_small_050_amnist", "lcnet_050_amnist", "tiny_resnet_fmnist", "tiny_convnext_fmnist",
         "tiny_vit_fmnist", "tiny_efficientnet_fmnist", "mobilenetv3_small_050_fmnist", "lcnet_050_fmnist",
         "tiny_byobnet_mixed")
LARGE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100", "craft_vgg16_bn")
SETTINGS = {  # name: (target, candidate teachers)
    "homogeneous": ("tiny_resnet_fmnist", SMALL),
    "heterogeneous": ("tiny_resnet_fmnist", LARGE),
    "imagenet": ("mobilenetv2_100", LARGE),
}
COLUMNS = ("setting", "task", "seed", "target", "teachers", "pi", "plain_acc", "btuning_acc", "gain", "plain_s",
           "btuning_s", "teach_s")


def choose_teachers(bench: bm.Benchmark, target: str, pool: tuple[str, ...], train: bm.TaskPart,
                    cache: Path) -> list[str]:
    """The K pool members (the target left out) of highest LogME score on the training part."""
    recipe = bench.config.finetune
    scores = {m: btuning.fit_logme(bench.entries[m], train.task, recipe, cache)[0] for m in pool if m != target}
    return sorted(scores, key=scores.get, reverse=True)[:K]


def summary(rows: list[dict]) -> str:
    """The markdown table: per setting, the mean gain with its paired interval, task signs and seconds."""
    lines = ["| setting | target | tasks x seeds | plain acc | B-Tuning acc | mean gain [95% CI] | tasks +/- | "
             "plain s | extra s |", "|---|---|---|---|---|---|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        gain = np.array([r["gain"] for r in mine])
        half = scipy.stats.t.ppf(0.975, len(gain) - 1) * gain.std(ddof=1) / math.sqrt(len(gain)) if len(gain) > 1 \
            else math.nan
        tasks = dict.fromkeys(r["task"] for r in mine)
        per_task = [np.mean([r["gain"] for r in mine if r["task"] == t]) for t in tasks]
        extra = np.mean([r["teach_s"] + r["btuning_s"] - r["plain_s"] for r in mine])
        lines.append(
            f"| {setting} | {mine[0]['target']} | {len(tasks)} x {len(mine) // len(tasks)} | "
            f"{np.mean([r['plain_acc'] for r in mine]):.1f} | {np.mean([r['btuning_acc'] for r in mine]):.1f} | "
            f"{gain.mean():+.2f} [{gain.mean() - half:+.2f}, {gain.mean() + half:+.2f}] | "
            f"{sum(g > 0 for g in per_task)}/{sum(g < 0 for g in per_task)} | "
            f"{np.mean([r['plain_s'] for r in mine]):.1f} | {extra:+.1f} |")
    return "\n".join(lines)


def save_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--role", choices=["test", "train"], default="test",
                        help="whose tasks: study other lambdas or step counts on training tasks, never on test tasks")
    parser.add_argument("--tasks", nargs="+", help="task ids of that role (default: all of them)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tradeoff", type=float, default=btuning.TRADEOFF, help="lambda (default: the authors' 100)")
    parser.add_argument("--steps", type=int, help="optimizer steps of both runs (default: the recipe's)")
    parser.add_argument("--csv", type=Path, default=Path(__file__).with_name("btuning.csv"))
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # not "GPU available: ..." for every run
    bench = bm.load_benchmark(args.benchmark)
    specs = [t for t in bench.config.tasks if t.role == args.role and (args.tasks is None or t.id in args.tasks)]
    if args.tasks is not None and len(specs) != len(args.tasks):
        parser.error(f"unknown {args.role} tasks {sorted(set(args.tasks) - {t.id for t in specs})}")
    base = bench.config.finetune if args.steps is None else dataclasses.replace(bench.config.finetune, steps=args.steps)
    print(f"torch threads: {torch.get_num_threads()}; {len(specs)} {args.role} tasks x {len(args.seeds)} seeds x "
          f"settings {args.settings}; lambda {args.tradeoff:g}, {base.steps} steps", flush=True)
    rows, plain = [], {}  # plain: (target, task, seed) -> (accuracy, seconds), shared by settings of one target
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            train, test = bm.task_parts(spec, bench.config)
            for setting in args.settings:
                target, pool = SETTINGS[setting]
                teachers = choose_teachers(bench, target, pool, train, Path(tmp) / "select")
                entries = bench.entries
                cold = Path(tmp) / f"teach-{setting}-{spec.id}"  # a fresh cache: the preparation is timed cold
                teaching = btuning.teach(entries[target], [entries[t] for t in teachers], train.task, base, cold)
                for seed in args.seeds:
                    recipe = dataclasses.replace(base, seed=seed)
                    if (target, spec.id, seed) not in plain:
                        start = time.perf_counter()
                        accuracy = finetune(entries[target], train, test, recipe)[0]
                        plain[target, spec.id, seed] = accuracy, time.perf_counter() - start
                    tuned = btuning.tune(entries[target], teaching, train.task, recipe, test.task, args.tradeoff)
                    acc, seconds = plain[target, spec.id, seed]
                    rows.append({
                        "setting": setting, "task": spec.id, "seed": seed, "target": target,
                        "teachers": " ".join(teachers), "pi": " ".join(f"{p:.3f}" for p in teaching.pi),
                        "plain_acc": acc, "btuning_acc": tuned.test_accuracy, "gain": tuned.test_accuracy - acc,
                        "plain_s": round(seconds, 2), "btuning_s": round(tuned.seconds, 2),
                        "teach_s": round(teaching.seconds, 2),
                    })
                    print(f"{setting:13s} {spec.id:26s} seed {seed}: plain {acc:5.1f}  B-Tuning "
                          f"{tuned.test_accuracy:5.1f}  teachers {' '.join(teachers)}", flush=True)
            save_csv(rows, args.csv)
    print(summary(rows))


if __name__ == "__main__":
    main()
