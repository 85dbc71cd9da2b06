"""B-Tuning in its paper's regime: a weak deployable target, stronger teachers, hundreds of images, hundreds of steps.

Target MobileNetV2 (ImageNet) at 128 px. Two teacher sets (``--teachers``): ``top3``, the K = 3 members of ``POOL``
(DINOv2, the other ImageNet and ImageNet-derived members, the face model) with the highest LogME on the task's
training part, each at the v3 recipe's size for it (the paper's "rank, then tune"); ``dinov2``, DINOv2 ViT-S/14
alone at its native 224 px (``STRONG``: the pool's largest pre-training, unhandicapped, whether or not LogME ranks it
first; the report measures whether it is the stronger predictor). Three methods on the same images, seeds and recipe
(``RECIPE``: AdamW, cosine, 200 steps of 16, ``ranker.tune.finetune``): plain fine-tuning; knowledge distillation
from the teachers' cross-fitted linear probes (``ranker.tune.distill``); B-Tuning (``ranker.tune.btuning``:
cross-fitted mapped features, the target's weights on train-mode features).

Tasks (``TASKS``) have 500-700 training images: Fashion-MNIST, Animal-MNIST and digits as they are; the colour
sources (Tux Paint, OpenMoji, Open Clip Art) and the LFW faces, which have a few hundred images, as augmented
copies of their training half (random resized crops and flips, drawn once and kept: teachers read each copy once;
an image's copies share a cross-fitting fold and the held-out half is never augmented). Roles follow Benchmark v3's
families: lambda, the temperature and alpha are chosen on the ``train`` tasks (held-out part = validation), the
choices are then measured on the ``test`` tasks, which are new in their classes.

    OMP_NUM_THREADS=1 python benchmarks/btuning.py --role train --shard 0/2 &   # the grid, seed 0
    OMP_NUM_THREADS=1 python benchmarks/btuning.py --role train --shard 1/2
    OMP_NUM_THREADS=1 python benchmarks/btuning.py --role test --shard 0/2 &    # the chosen settings, seeds 0-2
    OMP_NUM_THREADS=1 python benchmarks/btuning.py --role test --shard 1/2
    OMP_NUM_THREADS=1 python benchmarks/btuning.py --teachers dinov2 --role train   # then --role test: DINOv2 alone
    OMP_NUM_THREADS=1 python benchmarks/btuning.py --probes    # frozen target and teachers on the held-out parts
    python benchmarks/btuning.py --report      # both roles' tables from the CSVs, into benchmarks/btuning/REPORT.md

Rows go to ``benchmarks/btuning/<role>-<i>of<n>.csv`` (``dinov2-<role>-...`` for that teacher set; its plain rows
are the ``top3`` files') as each run ends; a run already in any CSV of the role is
skipped, so a stopped run resumes. ``diagnostics.csv`` holds, per task and teacher, what says whether the teachers'
term carries information: N and D, LogME, the mapped features' label accuracy in-sample and cross-fitted, and the
teachers' MSE at the first step with the target's weights fitted on eval-mode against train-mode features.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from PIL import Image
from torchvision.transforms import v2

from data.build_history import linear_probe, shard_arg
from ranker.files import write_atomic
from ranker.tasks import benchmark as bm
from ranker.tasks import datasets, loaders
from ranker.transfer.logme import posterior_weights
from ranker.tune import btuning, distill
from ranker.tune.finetune import finetune, recipe_entry
from ranker.zoo import manifest as zoo

OUT = Path(__file__).with_name("btuning")
MANIFEST = "ranker/configs/zoo/v3.yaml"
TARGET = "mobilenetv2_100"
POOL = ("dinov2_vits14", "efficientnet_lite0", "efficientnet_lite3_int8", "mobilenetv2_100_dogs",
        "mobilenetv2_100_coco_ssd", "faceres")
K = 3
RECIPE = bm.FinetuneRecipe(
    name="btuning-paper-v1", steps=btuning.STEPS, batch_size=16, lr=2e-4, head_lr_mult=10.0, weight_decay=0.01,
    max_input_size=128, input_sizes={"dinov2_vits14": 98, "mobilenetv2_100_dogs": 160, "mobilenetv2_100_coco_ssd": 160},
)
STRONG = dataclasses.replace(RECIPE, input_sizes={**RECIPE.input_sizes, "dinov2_vits14": 224})
"""The ``dinov2`` set's teacher recipe: DINOv2 at its native size (the target's size and training are RECIPE's)."""
AUGMENTED_SIZE = 160  # px of the augmented copies (the largest size a pool member reads)
MIN_TRAIN = 500  # augmented tasks get enough copies of each training image to reach this many
GRID = {"plain": [{}], "kd": [{"alpha": 0.5}, {"alpha": 0.9}],
        "btuning": [{"lambda": 1.0, "T": 0.1}, {"lambda": 10.0, "T": 0.1}, {"lambda": 100.0, "T": 0.1},
                    {"lambda": 10.0, "T": 1.0}]}
"""The settings tried on the training tasks; lambda 100 and T 0.1 are the authors'."""
TEACHER_SETS = ("top3", "dinov2")
"""``--teachers``: LogME's top K of POOL, or DINOv2 alone at 224 px (K = 1: pi = 1, so T plays no part)."""


def grid(teachers: str) -> dict[str, list[dict]]:
    """The settings a teacher set tries on the training tasks: GRID, less the temperatures other than the default
    for the one-teacher set."""
    if teachers == "top3":
        return GRID
    return {m: [p for p in g if p.get("T", btuning.TEMPERATURE) == btuning.TEMPERATURE] for m, g in GRID.items()}


def prefix(teachers: str) -> str:
    """The teacher set's CSV name prefix ("" for top3, whose files came first)."""
    return "" if teachers == "top3" else f"{teachers}-"

SEEDS = {"train": (0,), "test": (0, 1, 2), "curve": (0, 1)}
CURVE = (10, 50)
"""Training images per class of the curve (``--role curve``): the test tasks used as they are, subsampled."""
COLUMNS = ("role", "task", "seed", "method", "setting", "accuracy", "seconds", "teach_s", "first_ce", "first_term",
           "n_train", "n_test", "teachers", "pi")
PROBES = ("task", "model", "input_size", "n_train", "n_test", "mapped_acc_heldout", "probe_acc_heldout")
DIAGNOSTICS = ("task", "model", "n", "d", "logme", "mapped_acc_insample", "mapped_acc_crossfit", "first_mse_eval_w",
               "first_mse_train_w")


@dataclasses.dataclass(frozen=True)
class PaperTask:
    """A task of this study: a benchmark task spec (pool = every image of the dataset) and its augmentation."""

    role: str
    spec: bm.TaskSpec
    augment: bool  # False: the training part as it is


def _spec(task_id: str, role: str, dataset: str, classes: tuple[str, ...], n_train: int = 0, n_test: int = 0
          ) -> bm.TaskSpec:
    names = bm.pool(dataset, "none", 0).class_names
    return bm.TaskSpec(id=task_id, role=role, dataset=dataset, classes=sorted(names.index(c) for c in classes),
                       n_train=n_train, n_test=n_test, group=task_id)


def tasks() -> list[PaperTask]:
    """The study's tasks: three training (selection) tasks and eight test tasks, in v3's family roles."""
    fm, am = loaders.FASHION_MNIST_CLASSES, loaders.ANIMAL_MNIST_CLASSES
    return [
        PaperTask("train", _spec("fmnist-c0-6", "train", "fashion_mnist", fm[:7], 90, 100), False),
        PaperTask("train", _spec("tux-made", "train", "tuxpaint", ("clothes", "seasonal/christmas", "symbols/math",
                                                                   "symbols/money", "town/houses", "town/roadsigns",
                                                                   "vehicles")), True),
        PaperTask("train", _spec("moji-things", "train", "openmoji", ("transport-ground", "sky & weather", "clothing",
                                                                      "time", "alphanum", "geometric")), True),
        PaperTask("test", _spec("fmnist-c789", "test", "fashion_mnist", fm[7:], 200, 200), False),
        PaperTask("test", _spec("amnist-c789", "test", "animal_mnist_heldout", am[7:], 170, 130), False),
        PaperTask("test", _spec("digits", "test", "digits", tuple(str(d) for d in range(10)), 60), False),
        PaperTask("test", _spec("lfw", "test", "lfw_subset", ("face", "non_face")), True),
        PaperTask("test", _spec("tux-nature", "test", "tuxpaint", ("animals/birds", "animals/insects",
                                                                   "animals/mammals", "food/fruit", "food/vegetables",
                                                                   "plants/flowers")), True),
        PaperTask("test", _spec("moji-nature", "test", "openmoji", ("animal-mammal", "animal-bird", "animal-bug",
                                                                    "plant-other", "food-fruit", "food-vegetable",
                                                                    "food-prepared", "drink")), True),
        PaperTask("test", _spec("clip-nature", "test", "openclipart", ("animals/birds", "animals/bugs",
                                                                       "animals/mammals", "food/beverages",
                                                                       "food/desserts", "food/fruit",
                                                                       "food/meats_and_eggs", "plants/flowers")), True),
        PaperTask("test", _spec("clip-people", "test", "openclipart", ("people/bodypart", "people/smilies",
                                                                       "people/stickmen", "recreation/music",
                                                                       "recreation/sports", "recreation/toys")), True),
    ]  # fmt: skip


def augmented(part: datasets.Task, copies: int, seed: int) -> tuple[datasets.Task, np.ndarray]:
    """``copies`` versions of every image of ``part`` at AUGMENTED_SIZE px (the first the whole image resized, the
    others random resized crops of 50-100% of its area, flipped at random), and each copy's source index ``[N]``."""
    crop = v2.Compose([v2.RandomResizedCrop(AUGMENTED_SIZE, scale=(0.5, 1.0), antialias=True),
                       v2.RandomHorizontalFlip()])
    torch.manual_seed(seed)
    pixels, source = [], []
    for i in range(len(part)):
        image = part.image(i)
        pixels.append(np.asarray(image.resize((AUGMENTED_SIZE, AUGMENTED_SIZE), Image.Resampling.BICUBIC)))
        pixels.extend(np.asarray(crop(image)) for _ in range(copies - 1))
        source.extend([i] * copies)
    source = np.asarray(source)
    return (datasets.Task(f"{part.id}/aug{copies}-{seed}", part.labels[source], part.class_names,
                          images=np.stack(pixels)), source)


def materialize(task: PaperTask, per_class: int | None = None) -> tuple[datasets.Task, datasets.Task, np.ndarray]:
    """(training images, held-out images, cross-fitting groups ``[N]``) of a task; with ``per_class`` (tasks used as
    they are), a seeded draw of that many of its training images per class, the held-out part unchanged."""
    config = bm.BenchmarkConfig(name="btuning", manifest=MANIFEST, general_encoder=TARGET, pool_per_class=0)
    train, test = bm.task_parts(task.spec, config)
    if per_class is not None:
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(train.labels == c), per_class, replace=False)
                                       for c in range(len(train.class_names))]))
        return train.task.subset(keep, f"n{per_class}"), test.task, np.arange(len(keep))
    if not task.augment:
        return train.task, test.task, np.arange(len(train.indices))
    copies = math.ceil(MIN_TRAIN / len(train.indices))
    images, groups = augmented(train.task, copies, seed=0)
    return images, test.task, groups


def diagnostics(task_id: str, entries: dict[str, zoo.ZooEntry], train: datasets.Task, groups: np.ndarray,
                teaching: btuning.Teaching, teacher_recipe: bm.FinetuneRecipe) -> list[dict]:
    """Per teacher: does its mapped output carry more than the labels? And the first-step MSE of the target's
    weights fitted on eval-mode against train-mode features (the teachers' pi-weighted targets)."""
    target = entries[TARGET]
    labels = torch.as_tensor(train.labels)
    live = btuning.train_mode_features(target, train, RECIPE)
    w_eval = posterior_weights(btuning.frozen_features(target, train, RECIPE), train.labels)[1]
    w_train = teaching.target_weights.double()  # teach() fitted them on train-mode features like ``live``
    mse = {name: float(torch.mean((live @ w.T - teaching.targets.double()) ** 2))
           for name, w in (("eval", w_eval), ("train", w_train))}
    rows = []
    for name in teaching.teachers:
        feats = btuning.frozen_features(entries[name], train, teacher_recipe)
        score, weights = posterior_weights(feats, train.labels)
        crossfit = btuning.crossfit_mapped(feats, train.labels, groups)
        rows.append({"task": task_id, "model": name, "n": len(train), "d": feats.shape[1], "logme": round(score, 4),
                     "mapped_acc_insample": float(((feats @ weights.T).argmax(1) == labels).double().mean()),
                     "mapped_acc_crossfit": float((crossfit.argmax(1) == labels).double().mean()),
                     "first_mse_eval_w": mse["eval"], "first_mse_train_w": mse["train"]})
    return rows


def probe_rows(task_id: str, task: PaperTask, entries: dict[str, zoo.ZooEntry], teachers: list[str]) -> list[dict]:
    """How strong each model is on the held-out part with frozen features: the target, ``teachers`` at RECIPE's
    sizes and DINOv2 at STRONG's, each fitted on the training images; B-Tuning's mapping (LogME posterior weights,
    argmax of the mapped features) and KD's (the logistic probe ``data.build_history.linear_probe``)."""
    train, test, _ = materialize(task)
    rows = []
    for name, recipe in [(m, RECIPE) for m in dict.fromkeys([TARGET, *teachers])] + [("dinov2_vits14", STRONG)]:
        sized = recipe_entry(entries[name], recipe)
        f_train, f_test = (btuning.frozen_features(entries[name], part, recipe) for part in (train, test))
        weights = posterior_weights(f_train, train.labels)[1]
        mapped = float(((f_test @ weights.T).argmax(1).numpy() == test.labels).mean())
        rows.append({"task": task_id, "model": name, "input_size": sized.input_size, "n_train": len(train),
                     "n_test": len(test), "mapped_acc_heldout": round(100 * mapped, 2),
                     "probe_acc_heldout": round(linear_probe(f_train.float(), train.labels, f_test.float(),
                                                             test.labels), 2)})
        print(f"{task_id:12s} {name:26s} {sized.input_size:4d} px  mapped {rows[-1]['mapped_acc_heldout']:5.1f}%  "
              f"probe {rows[-1]['probe_acc_heldout']:5.1f}%", flush=True)
    return rows


def probe(shard: tuple[int, int]) -> None:
    """Writes ``probes-<i>of<n>.csv``: ``probe_rows`` of this shard's tasks (teachers as the top3 runs chose them)."""
    entries = members()
    chosen = {r["task"]: r["teachers"].split() for r in read_rows("train-*.csv") + read_rows("test-*.csv")
              if r["teachers"]}
    path = OUT / f"probes-{shard[0]}of{shard[1]}.csv"
    done = {r["task"] for r in read_rows("probes-*.csv")}
    rows = read_rows(path.name)
    for task in tasks()[shard[0]::shard[1]]:
        if task.spec.id not in done:
            rows += probe_rows(task.spec.id, task, entries, chosen.get(task.spec.id, []))
            write_csv(rows, path, PROBES)


def members() -> dict[str, zoo.ZooEntry]:
    """The study's zoo (MANIFEST) by member name."""
    return {e.name: e for e in zoo.load_manifest(MANIFEST).models}


def setting_name(params: dict) -> str:
    return " ".join(f"{k}={v:g}" for k, v in params.items())


def read_rows(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(OUT.glob(pattern)):
        with path.open() as f:
            rows.extend(csv.DictReader(f))
    return rows


def chosen_settings(teachers: str = "top3") -> dict[str, list[dict]]:
    """Per method, the training tasks' best setting by mean held-out accuracy (``[prefix]train-*.csv``)."""
    rows = read_rows(f"{prefix(teachers)}train-*.csv")
    choice = {"plain": [{}]}
    for method in ("kd", "btuning"):
        means = {}
        for params in grid(teachers)[method]:
            name = setting_name(params)
            accs = [float(r["accuracy"]) for r in rows if r["method"] == method and r["setting"] == name]
            if len(accs) < sum(t.role == "train" for t in tasks()):
                raise SystemExit(f"the training tasks lack {method} {name}: run --teachers {teachers} --role train "
                                 "first")
            means[name] = np.mean(accs), params
        choice[method] = [max(means.values(), key=lambda v: v[0])[1]]
    return choice


def write_csv(rows: list[dict], path: Path, columns: tuple[str, ...]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def units(role: str) -> list[tuple[str, PaperTask, int | None]]:
    """(row task id, task, training images per class or None) of every task a role measures."""
    if role == "curve":
        return [(f"{t.spec.id}@{n}", t, n) for t in tasks() if t.role == "test" and not t.augment for n in CURVE]
    return [(t.spec.id, t, None) for t in tasks() if t.role == role]


def run(role: str, shard: tuple[int, int], teachers: str = "top3") -> None:
    """Measures this shard's missing runs of ``role`` with a teacher set, writing rows as they end (the ``dinov2``
    set measures no plain runs: they are the top3 files')."""
    entries = members()
    settings = grid(teachers) if role == "train" else chosen_settings(teachers)
    if role == "curve":
        settings = {"plain": [{}], "btuning": settings["btuning"]}
    if teachers != "top3":
        settings = {m: g for m, g in settings.items() if m != "plain"}
    teacher_recipe = RECIPE if teachers == "top3" else STRONG
    name = f"{prefix(teachers)}{role}"
    done = {(r["task"], r["seed"], r["method"], r["setting"]) for r in read_rows(f"{name}-*.csv")}
    path = OUT / f"{name}-{shard[0]}of{shard[1]}.csv"
    rows = read_rows(path.name)
    diag_path = OUT / f"{prefix(teachers)}diagnostics-{role}-{shard[0]}of{shard[1]}.csv"
    diag = read_rows(diag_path.name)
    diagnosed = {d["task"] for d in read_rows(f"{prefix(teachers)}diagnostics-{role}-*.csv")}
    for task_id, task, per_class in units(role)[shard[0]::shard[1]]:
        todo = [(seed, method, params) for seed in SEEDS[role] for method, tried in settings.items() for params in tried
                if (task_id, str(seed), method, setting_name(params)) not in done]
        if not todo:
            continue
        train, test, groups = materialize(task, per_class)
        if teachers == "top3":
            scores = {m: posterior_weights(btuning.frozen_features(entries[m], train, RECIPE), train.labels)[0]
                      for m in POOL}
            chosen = [entries[m] for m in sorted(scores, key=scores.get, reverse=True)[:K]]
        else:
            chosen = [entries["dinov2_vits14"]]
        teachings, soft = {}, None
        for seed, method, params in todo:
            recipe = dataclasses.replace(RECIPE, seed=seed)
            temperature = params.get("T", btuning.TEMPERATURE)
            if temperature not in teachings:
                teachings[temperature] = btuning.teach(entries[TARGET], chosen, train, teacher_recipe,
                                                       temperature=temperature, groups=groups)
                if task_id not in diagnosed:
                    diagnosed.add(task_id)
                    diag += diagnostics(task_id, entries, train, groups, teachings[temperature], teacher_recipe)
                    write_csv(diag, diag_path, DIAGNOSTICS)
            teaching = teachings[temperature]
            first_ce = first_term = ""
            if method == "plain":
                start = time.perf_counter()
                accuracy = finetune(entries[TARGET], train, test, recipe)[0]
                seconds, teach_s = time.perf_counter() - start, 0.0
            elif method == "kd":
                soft = soft if soft is not None else distill.soft_labels(chosen, train, teacher_recipe, teaching.pi,
                                                                         groups)
                result = distill.distill(entries[TARGET], soft, train, recipe, test, params["alpha"])
                accuracy, seconds, teach_s = result.test_accuracy, result.seconds, teaching.seconds
                first_ce, first_term = result.losses["cross_entropy"][0], result.losses["distill"][0]
            else:
                result = btuning.tune(entries[TARGET], teaching, train, recipe, test, params["lambda"])
                accuracy, seconds, teach_s = result.test_accuracy, result.seconds, teaching.seconds
                first_ce, first_term = result.losses["cross_entropy"][0], result.losses["teachers"][0]
            rows.append({"role": role, "task": task_id, "seed": seed, "method": method,
                         "setting": setting_name(params), "accuracy": round(accuracy, 3), "seconds": round(seconds, 1),
                         "teach_s": round(teach_s, 1), "first_ce": first_ce, "first_term": first_term,
                         "n_train": len(train), "n_test": len(test), "teachers": " ".join(t.name for t in chosen),
                         "pi": " ".join(f"{p:.3f}" for p in teaching.pi)})
            write_csv(rows, path, COLUMNS)
            print(f"{task_id:12s} seed {seed} {method:8s} {setting_name(params):18s} {accuracy:5.1f}%  "
                  f"{seconds:5.0f} s", flush=True)


def _interval(values: list[float]) -> str:
    """mean [95% t-interval] of ``values``."""
    x = np.asarray(values, dtype=float)
    half = scipy.stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return f"{x.mean():+.2f} [{x.mean() - half:+.2f}, {x.mean() + half:+.2f}]"


def _ratio(rows: list[dict]) -> str:
    ratios = [float(r["first_term"]) / float(r["first_ce"]) for r in rows if r["first_term"] not in ("", None)]
    return f"{np.median(ratios):.2f}" if ratios else ""


def selection_table(rows: list[dict], settings: dict[str, list[dict]]) -> list[str]:
    """The training tasks' grid: held-out accuracy per task and setting, and the first step's term / cross-entropy."""
    ids = list(dict.fromkeys(r["task"] for r in rows))
    lines = ["| method | setting | " + " | ".join(ids) + " | mean | first term / CE |",
             "|---|---|" + "---|" * (len(ids) + 2)]
    for method, tried in settings.items():
        for params in tried:
            name = setting_name(params)
            mine = [r for r in rows if r["method"] == method and r["setting"] == name]
            acc = {r["task"]: float(r["accuracy"]) for r in mine}
            cells = " | ".join(f"{acc[t]:.1f}" if t in acc else "" for t in ids)
            mean = f"{np.mean(list(acc.values())):.1f}" if acc else ""
            lines.append(f"| {method} | {name or '-'} | {cells} | {mean} | {_ratio(mine)} |")
    return lines


def gain_table(rows: list[dict]) -> list[str]:
    """Each method's gain over plain fine-tuning, points, paired by task and seed."""
    plain = {(r["task"], r["seed"]): r for r in rows if r["method"] == "plain"}
    lines = ["| method | setting | tasks x seeds | plain acc | acc | gain over tasks [95% CI] | "
             "gain over tasks x seeds [95% CI] | tasks +/- | first term / CE | extra s per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method in ("kd", "btuning"):
        mine = [r for r in rows if r["method"] == method and (r["task"], r["seed"]) in plain]
        if not mine:
            continue
        pairs = [(float(r["accuracy"]) - float(plain[r["task"], r["seed"]]["accuracy"]), r) for r in mine]
        ids = list(dict.fromkeys(r["task"] for r in mine))
        per_task = [np.mean([g for g, r in pairs if r["task"] == t]) for t in ids]
        extra = np.mean([float(r["teach_s"]) + float(r["seconds"]) - float(plain[r["task"], r["seed"]]["seconds"])
                         for r in mine])
        lines.append(
            f"| {method} | {mine[0]['setting']} | {len(ids)} x {len(mine) // len(ids)} | "
            f"{np.mean([float(plain[r['task'], r['seed']]['accuracy']) for r in mine]):.1f} | "
            f"{np.mean([float(r['accuracy']) for r in mine]):.1f} | {_interval(per_task)} | "
            f"{_interval([g for g, _ in pairs])} | {sum(g > 0 for g in per_task)}/{sum(g < 0 for g in per_task)} | "
            f"{_ratio(mine)} | {extra:+.0f} |")
    return lines


def diagnostics_table(rows: list[dict]) -> list[str]:
    lines = ["| task | teacher | N | D | LogME | mapped acc in-sample | mapped acc cross-fitted | "
             "first MSE, W on eval-mode | first MSE, W on train-mode |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['model']} | {r['n']} | {r['d']} | {float(r['logme']):.3f} | "
                     f"{100 * float(r['mapped_acc_insample']):.1f} | {100 * float(r['mapped_acc_crossfit']):.1f} | "
                     f"{float(r['first_mse_eval_w']):.4f} | {float(r['first_mse_train_w']):.4f} |")
    return lines


def curve_points(curve: list[dict], test: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per task used as it is: (training images per class, B-Tuning's gain over plain, seeds averaged), smallest
    first; the full task's point comes from the test rows."""
    points: dict[str, list[tuple[int, float]]] = {}
    for rows in (curve, test):
        plain = {(r["task"], r["seed"]): float(r["accuracy"]) for r in rows if r["method"] == "plain"}
        for task_id in dict.fromkeys(r["task"] for r in rows):
            base = task_id.partition("@")[0]
            task = next(t for t in tasks() if t.spec.id == base)
            mine = [r for r in rows
                    if r["task"] == task_id and r["method"] == "btuning" and (task_id, r["seed"]) in plain]
            if mine and not task.augment:
                gain = np.mean([float(r["accuracy"]) - plain[task_id, r["seed"]] for r in mine])
                points.setdefault(base, []).append((int(mine[0]["n_train"]) // len(task.spec.classes), gain))
    return {k: sorted(v) for k, v in points.items()}


def curve_plot(points: dict[str, list[tuple[int, float]]]) -> bytes:
    """curve.png: B-Tuning's gain against training images per class, one line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for task_id, pts in points.items():
        ax.plot([n for n, _ in pts], [g for _, g in pts], marker="o", label=task_id)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel("B-Tuning - plain (points)")
    ax.set_title(f"B-Tuning {setting_name(chosen_settings()['btuning'][0])}, {TARGET}, {RECIPE.steps} steps",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    return buffer.getvalue()


def curve_table(points: dict[str, list[tuple[int, float]]]) -> list[str]:
    lines = ["| task | B-Tuning - plain, points, at training images per class |", "|---|---|"]
    for task_id, pts in points.items():
        lines.append(f"| {task_id} | " + ", ".join(f"{n}: {g:+.2f}" for n, g in pts) + " |")
    return lines


def strength_table(rows: list[dict], diag: list[dict], teacher_recipe: bm.FinetuneRecipe) -> list[str]:
    """Per test task: are the teachers stronger than the target? The fine-tuned target's held-out accuracy against
    the frozen target's and the best teacher's on the same held-out images (``probes-*.csv``: logistic probe /
    B-Tuning's mapping), the teachers' best cross-fitted accuracy on the training images, and each method's gain."""
    entries = members()
    probes = {(r["task"], r["model"], int(r["input_size"])): r for r in read_rows("probes-*.csv")}

    def held_out(task_id: str, name: str, recipe: bm.FinetuneRecipe) -> tuple[float, float] | None:
        r = probes.get((task_id, name, recipe_entry(entries[name], recipe).input_size))
        return (float(r["probe_acc_heldout"]), float(r["mapped_acc_heldout"])) if r else None

    lines = ["| task | fine-tuned target | frozen target: probe / mapped | best teacher: probe / mapped | "
             "teachers' best cross-fitted acc (training images) | KD gain | B-Tuning gain |",
             "|---|---|---|---|---|---|---|"]
    for task_id in dict.fromkeys(r["task"] for r in rows if r["method"] != "plain"):
        acc = {m: np.mean([float(r["accuracy"]) for r in rows if r["task"] == task_id and r["method"] == m])
               for m in ("plain", "kd", "btuning")}
        teachers = next(r["teachers"].split() for r in rows if r["task"] == task_id and r["method"] != "plain")
        target = held_out(task_id, TARGET, RECIPE)
        measured = [(v, t) for t in teachers if (v := held_out(task_id, t, teacher_recipe)) is not None]
        best = max(measured) if measured else None
        crossfit = [100 * float(d["mapped_acc_crossfit"]) for d in diag if d["task"] == task_id]
        lines.append(f"| {task_id} | {acc['plain']:.1f} | "
                     + (f"{target[0]:.1f} / {target[1]:.1f}" if target else "") + " | "
                     + (f"{best[0][0]:.1f} / {best[0][1]:.1f} ({best[1]})" if best else "") + " | "
                     + (f"{max(crossfit):.1f}" if crossfit else "")
                     + f" | {acc['kd'] - acc['plain']:+.2f} | {acc['btuning'] - acc['plain']:+.2f} |")
    return lines


def report() -> str:
    """REPORT.md: the grid on the training tasks, the chosen settings on the test tasks, the diagnostics."""
    out = ["# B-Tuning in the paper's regime", "",
           "Generated by `python benchmarks/btuning.py --report` from the CSVs beside it; the recipe, tasks and "
           "methods are in the script's docstring. Accuracy: percent on the held-out part.", "",
           "## Training tasks: the settings tried (seed 0)", "", *selection_table(read_rows("train-*.csv"), GRID), "",
           "## Test tasks: the chosen settings against plain fine-tuning", "",
           *gain_table(read_rows("test-*.csv")), "",
           "Per task (seeds averaged):", "",
           *strength_table(read_rows("test-*.csv"), read_rows("diagnostics-*.csv"), RECIPE), "",
           *_curve_section(), *_strong_section(),
           "## Does the teachers' term carry information? (per task and teacher)", "",
           *diagnostics_table(read_rows("diagnostics-*.csv")), ""]
    return "\n".join(out)


def _strong_section() -> list[str]:
    """The ``dinov2`` teacher set's grid and test gains (plain rows from the top3 files) once it has rows."""
    train, test = read_rows("dinov2-train-*.csv"), read_rows("dinov2-test-*.csv")
    if not train:
        return []
    plain = [r for r in read_rows("train-*.csv") if r["method"] == "plain"]
    out = ["## A stronger teacher: DINOv2 ViT-S/14 alone at 224 px (`--teachers dinov2`)", "",
           "Training tasks (seed 0):", "", *selection_table(plain + train, grid("dinov2")), ""]
    if test:
        rows = [r for r in read_rows("test-*.csv") if r["method"] == "plain"] + test
        out += ["Test tasks:", "", *gain_table(rows), "", "Per task (seeds averaged):", "",
                *strength_table(rows, read_rows("dinov2-diagnostics-*.csv"), STRONG), ""]
    return out + ["DINOv2's diagnostics:", "", *diagnostics_table(read_rows("dinov2-diagnostics-*.csv")), ""]


def _curve_section() -> list[str]:
    """The curve's table (and curve.png) once ``--role curve`` has rows; nothing before."""
    curve = read_rows("curve-*.csv")
    if not curve:
        return []
    points = curve_points(curve, read_rows("test-*.csv"))
    write_atomic(OUT / "curve.png", curve_plot(points))
    return ["## B-Tuning's gain against training images per class (tasks used as they are; seeds 0-1, full: 0-2)", "",
            *curve_table(points), "", "![gain against images per class](curve.png)", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["train", "test", "curve"],
                        help="measure this role's runs (curve: the test tasks used as they are, at fewer images)")
    parser.add_argument("--teachers", choices=TEACHER_SETS, default="top3",
                        help="top3: LogME's top 3 of the pool (default); dinov2: DINOv2 alone at 224 px")
    parser.add_argument("--shard", type=shard_arg, default=(0, 1), help="i/n: every n-th task from the i-th")
    parser.add_argument("--probes", action="store_true",
                        help="measure each task's target and teachers on the held-out part with frozen features")
    parser.add_argument("--report", action="store_true", help="write REPORT.md from the CSVs")
    args = parser.parse_args()
    if args.role is None and not args.report and not args.probes:
        parser.error("pass --role train, --role test, --probes or --report")
    if args.teachers != "top3" and args.role == "curve":
        parser.error("--role curve measures the top3 teachers only")
    if args.role is not None:
        print(f"torch threads: {torch.get_num_threads()}; target {TARGET}; {RECIPE.steps} steps of "
              f"{RECIPE.batch_size}", flush=True)
        run(args.role, args.shard, args.teachers)
    if args.probes:
        probe(args.shard)
    if args.report:
        write_atomic(OUT / "REPORT.md", report().encode())
        print(report())


if __name__ == "__main__":
    main()
