"""Draws Benchmark v3's tasks and writes ``data/benchmarks/v3/benchmark.yaml`` (once: the file is what is measured).

Each task is 2-8 classes of one class family of one source, at least 10 training images per class (some 50),
the rest of each class's pool held out. Families are cross-validation groups, and a family is all training or all
test, so every test task is new in its classes (Fashion-MNIST and Animal-MNIST, as in v2, split by class: 0-6
train, 7-9 test). Colour sources get a grey variant where it makes another task (photos and emoji without colour).
Drawn with numpy seed 2026; each task's classes are named in a comment above it.

    python -m data.draw_benchmark_v3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranker.tasks import benchmark as bm
from ranker.tasks import loaders

OUT = bm.BENCHMARKS_DIR / "v3" / "benchmark.yaml"
POOL_PER_CLASS = 100
MIN_HELD_OUT = 8
"""A class joins a family's tasks only when its pool leaves this many held-out images after the training part."""


@dataclass(frozen=True)
class Family:
    """A class family of a source: what cross-validation holds out whole, and how many tasks are drawn from it."""

    group: str
    dataset: str
    classes: tuple[str, ...]
    role: str
    tasks: int
    shots: tuple[int, ...] = (10, 15, 20)
    ways: tuple[int, int] = (2, 6)
    variants: tuple[str, ...] = ("none",)


FAMILIES = (
    # Tux Paint stamps: photo cut-outs (nature) are the test family, made things train
    Family("tux-nature", "tuxpaint", ("animals/birds", "animals/insects", "animals/mammals", "food/fruit",
                                      "food/vegetables", "plants/flowers"), "test", 8, (10, 15), (2, 5),
           ("none", "grey")),
    Family("tux-made", "tuxpaint", ("clothes", "seasonal/christmas", "symbols/alphabets", "symbols/math",
                                    "symbols/money", "town/houses", "town/roadsigns", "vehicles"), "train", 10,
           (10, 15), (2, 5), ("none", "grey")),
    # OpenMoji: animals, plants and food are the test family; people and things train
    Family("moji-nature", "openmoji", ("animal-mammal", "animal-bird", "animal-bug", "plant-other", "food-fruit",
                                       "food-vegetable", "food-prepared", "food-asian", "drink"), "test", 8,
           (10,), (2, 6), ("none", "grey")),
    Family("moji-people", "openmoji", ("face-concerned", "heart", "body-parts", "person", "person-gesture",
                                       "person-role", "person-fantasy", "person-activity", "person-sport",
                                       "family"), "train", 10, (10, 15, 20), (2, 6)),
    Family("moji-things", "openmoji", ("place-building", "transport-ground", "time", "sky & weather", "event",
                                       "sport", "game", "clothing", "office", "tool", "household", "arrow",
                                       "av-symbol", "other-symbol", "alphanum", "geometric", "country-flag"),
           "train", 12, (10, 15, 20), (2, 8), ("none", "grey")),
    # Open Clip Art: v2's families (same classes, same roles), with at least 10 training images per class
    Family("clip-computer", "openclipart", ("computer/buttons", "computer/hardware", "computer/icons",
                                            "computer/icons/flat-theme/action", "computer/icons/flat-theme/device",
                                            "computer/icons/lemon-theme/actions", "computer/icons/lemon-theme/apps",
                                            "computer/icons/lemon-theme/devices",
                                            "computer/icons/lemon-theme/filesystems",
                                            "computer/icons/lemon-theme/mimetypes"), "train", 6),
    Family("clip-signs", "openclipart", ("signs_and_symbols/clocks", "signs_and_symbols/flags/africa",
                                         "signs_and_symbols/flags/asia", "signs_and_symbols/flags/europe",
                                         "signs_and_symbols/led", "signs_and_symbols/map_symbols",
                                         "signs_and_symbols/weather"), "train", 6),
    Family("clip-things", "openclipart", ("buildings/homes", "shapes/arrows", "shapes/flowchart", "shapes/jigsaw",
                                          "shapes/stars", "special/patterns", "tools/weapons",
                                          "transportation/boating", "transportation/roadsigns"), "train", 6),
    Family("clip-nature", "openclipart", ("animals/birds", "animals/bugs", "animals/mammals", "food/beverages",
                                          "food/desserts", "food/fruit", "food/meats_and_eggs", "plants/flowers"),
           "test", 6),
    Family("clip-people", "openclipart", ("people/bodypart", "people/smilies", "people/stickmen",
                                          "recreation/games/cards/simple", "recreation/music", "recreation/sports",
                                          "recreation/toys"), "test", 5),
    # grey sources: classes 0-6 train, 7-9 test, with variants; 50-shot tasks where fine-tuning has data to use
    Family("fashion_mnist", "fashion_mnist", tuple(loaders.FASHION_MNIST_CLASSES[:7]), "train", 8, (10, 20, 50),
           (2, 7), ("none", "invert", "lowres")),
    Family("animal_mnist_heldout", "animal_mnist_heldout", tuple(loaders.ANIMAL_MNIST_CLASSES[:7]), "train", 6,
           (10, 20, 50), (2, 7), ("none", "invert")),
    Family("fmnist-c789", "fashion_mnist", tuple(loaders.FASHION_MNIST_CLASSES[7:]), "test", 2, (10, 50), (3, 3),
           ("none", "invert")),
    Family("amnist-c789", "animal_mnist_heldout", tuple(loaders.ANIMAL_MNIST_CLASSES[7:]), "test", 2, (10, 50),
           (3, 3), ("none", "lowres")),
    Family("digits", "digits", tuple(str(d) for d in range(10)), "test", 3, (10, 20), (5, 10), ("none", "invert")),
    Family("lfw_subset", "lfw_subset", ("face", "non_face"), "test", 2, (10, 30), (2, 2)),
)  # fmt: skip


RECIPE = {
    "name": "finetune-v3.2", "steps": 30, "batch_size": 16, "lr": 2e-4, "head_lr_mult": 10.0, "weight_decay": 0.01,
    "max_input_size": 128,
    "input_sizes": {"mobilenetv2_100": 160, "mobilenetv2_100_coco_ssd": 160, "mobilenetv2_100_dogs": 160,
                    "craft_vgg16_bn": 96, "hed_vgg16": 96, "vgg16_brain_mri": 96, "dinov2_vits14": 98,
                    "ppocrv4_det": 224, "centernet_mobilenetv3": 160, "handlandmark_full": 224,
                    "posenet_mobilenetv1": 257},
    "lrs": {"dinov2_vits14": 2e-05, "vgg16_brain_mri": 6e-05, "faceres": 6e-05, "centernet_mobilenetv3": 6e-05,
            "blazepose_heavy": 6e-05, "posenet_mobilenetv1": 6e-05},
    "head_norm": ["hed_vgg16", "dinov2_vits14", "vgg16_brain_mri", "faceres", "mobileface", "blazepose_heavy",
                  "handlandmark_full", "posenet_mobilenetv1"],
}  # fmt: skip
"""The ground truth's recipe, planned from benchmarks/finetune_cost_v3.csv (data/benchmarks/v3/README.md): the rest
of the zoo at min(native, 128) px; MobileFace and BlazePose take only their native size (``fixed_size``); ``lrs`` and
``head_norm`` chosen per member on training tasks by benchmarks/member_lr.py (benchmarks/member_lr_v3.csv)."""


def _pool_counts(dataset: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(class names, pool images per class) of a dataset as the benchmark pools it."""
    pool = bm.pool(dataset, "none", POOL_PER_CLASS)
    return pool.class_names, np.bincount(pool.labels, minlength=pool.num_classes)


def draw(rng: np.random.Generator) -> list[tuple[str, dict]]:
    """(comment, task spec) of every task, family by family."""
    out = []
    for family in FAMILIES:
        names, counts = _pool_counts(family.dataset)
        index = {n: i for i, n in enumerate(names)}
        missing = [c for c in family.classes if c not in index]
        if missing:
            raise ValueError(f"family {family.group}: {family.dataset} has no classes {missing}")
        seen: set[tuple] = set()
        for k in range(family.tasks):
            variant = family.variants[k % len(family.variants)]
            while True:  # draw again until the task is not one the family has already
                shots = int(rng.choice(family.shots))
                usable = [c for c in family.classes if counts[index[c]] >= shots + MIN_HELD_OUT]
                low, high = family.ways
                ways = int(rng.integers(low, min(high, len(usable)) + 1))
                classes = [usable[i] for i in sorted(rng.choice(len(usable), size=ways, replace=False))]
                if (key := (variant, shots, tuple(classes))) not in seen:
                    seen.add(key)
                    break
            tag = "" if variant == "none" else f"-{variant}"
            spec = {"id": f"{family.group}{tag}-{ways}way-{shots}shot-{k:02d}", "role": family.role,
                    "dataset": family.dataset, "variant": variant, "classes": sorted(index[c] for c in classes),
                    "n_train": shots, "n_test": 0, "seed": 0, "group": family.group}
            out.append((", ".join(classes), spec))
    return out


def _flow(value: object) -> str:
    """``value`` (dicts, lists, scalars) as one line of YAML flow style, keys in their order."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def main() -> None:
    tasks = draw(np.random.default_rng(2026))
    lines = [
        "# Benchmark v3: zoo v3 (16 real members, nine pre-training domains) x tasks from seven real sources, drawn by",
        "# `python -m data.draw_benchmark_v3` (its docstring says how); the recipe and its cost: README.md.",
        "name: v3",
        "manifest: ranker/configs/zoo/v3.yaml",
        "general_encoder: mobilenetv2_100",
        f"pool_per_class: {POOL_PER_CLASS}",
        f"finetune: {_flow(RECIPE)}",
        "tasks:",
    ]
    for comment, spec in tasks:
        lines += [f"  # {comment}", f"  - {_flow(spec)}"]
    Path(OUT).parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    roles = [spec["role"] for _, spec in tasks]
    print(f"wrote {OUT}: {len(tasks)} tasks, {roles.count('train')} training and {roles.count('test')} test")


if __name__ == "__main__":
    main()
