"""Ranks the zoo for a labelled image dataset, then B-Tunes the top model with the next K models as teachers.

The ranking is rank.py's (``ranker.serve.pipeline.Pipeline`` with the exported checkpoint, re-ranking included);
the target is its top-1 (or ``--target``; or the best model not among ``--teachers``), the teachers the next K (or
``--teachers``; with both named nothing is ranked). Training is the fine-tuning recipe of the checkpoint's benchmark
(``data/benchmarks/<name>/benchmark.yaml``: input sizes, AdamW, batch size) run for ``btuning.STEPS`` steps, plus
B-Tuning's teachers' term with the lambda and temperature chosen on training tasks (ranker/tune/btuning.py).

When to use it: to try on your own data with --test, keeping it only if it beats plain fine-tuning there; worth the
try where a teacher's frozen features, read through their LogME weights, predict held-out images better than the
fine-tuned target. When not: as the default. In its paper's regime (hundreds of images, a small target, LogME's top 3
or DINOv2 at 224 px as teachers) it did not beat plain fine-tuning in any measured setting (docs/btuning.md). It does
not pick the best model: that is rank.py.

Examples:
    python -m ranker.tune --data path/to/imagefolder --test path/to/heldout_folder --out runs/tuned
    python -m ranker.tune --data images.npz --target tiny_resnet_fmnist --teachers tiny_byobnet_mixed mobilenetv2_100

Writes into ``--out`` (default runs/btuning), replacing files of the same names:
    model.safetensors  the tuned target's ``trunk.*`` and ``head.*`` tensors (FinetuneModule's names); metadata:
                       target, input_size (px to feed it), classes (JSON list, the head's output order)
    btuning.json       {"dataset", "target", "teachers", "pi", "logme": {model: score}, "tradeoff", "temperature",
                       "recipe", "input_size", "classes", "n_train", "test", "n_test", "test_accuracy" (percent on
                       --test; null without it), "ranking": [model, ...] best first (null when not ranked),
                       "seconds": {"rank", "teach", "tune"}}
    loss.png           the losses per step: total, cross-entropy and lambda x the teachers' MSE
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch, timm and FAISS wait until the arguments are known: --help is instant
    from ranker.tune.btuning import Tuned

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_K = 3


def parser() -> argparse.ArgumentParser:
    """The command's arguments; defaults are paths, not the package's constants, so that --help imports nothing."""
    parser = argparse.ArgumentParser(prog="python -m ranker.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="the training images: an ImageFolder directory, an .npz of images and labels, or a real "
                             "dataset name")
    parser.add_argument("--test", help="held-out images of the same classes (same forms as --data): their accuracy "
                                       "goes into btuning.json")
    parser.add_argument("--target", help="the zoo member to tune (default: the ranking's best model that is not "
                                         "among --teachers)")
    parser.add_argument("--teachers", nargs="+", metavar="NAME", help="teacher zoo members (default: the next K)")
    parser.add_argument("-k", type=int, help=f"how many next-ranked models teach (default {DEFAULT_K})")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "btuning",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "v3-default",
                        help="exported ranker folder (default: %(default)s)")
    parser.add_argument("--manifest", type=Path,
                        help="zoo manifest YAML (default: the checkpoint's own zoo.yaml, the zoo it was trained on)")
    return parser


def check_out(out: Path) -> None:
    """Raises ValueError unless ``out`` is, or can be made, a folder this process may write into."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    parent = next(p for p in (out, *out.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written ({parent} is not a folder you may write into); choose another")


def check_choice(target: str | None, teachers: list[str] | None, k: int | None, zoo_names: list[str]) -> None:
    """Raises ValueError for named models outside the zoo, a target among its teachers, repeats, or a bad K."""
    if teachers is not None and k is not None:
        raise ValueError("pass --teachers or -k, not both (-k counts teachers taken from the ranking)")
    if k is not None and not 1 <= k < len(zoo_names):
        raise ValueError(f"-k {k} is outside 1..{len(zoo_names) - 1} (the zoo has {len(zoo_names)} models)")
    unknown = [n for n in [target, *(teachers or [])] if n is not None and n not in zoo_names]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; `python rank.py --names` lists the zoo")
    if teachers is not None and len(set(teachers)) != len(teachers):
        raise ValueError(f"--teachers {' '.join(teachers)} names a model twice; name each teacher once")
    if target is not None and target in (teachers or []):
        raise ValueError(f"{target} is both the target and a teacher; drop it from --teachers")


def plot_losses(tuned: Tuned, title: str) -> bytes:
    """The loss curves per step as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = {"total": "total", "cross_entropy": "cross-entropy", "teachers": "lambda x teachers' MSE"}
    for key, label in labels.items():
        ax.plot(range(1, len(tuned.losses[key]) + 1), tuned.losses[key], label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    import time
    from dataclasses import asdict, replace

    from safetensors.torch import save

    from ranker.files import write_atomic
    from ranker.serve import export
    from ranker.serve.pipeline import Pipeline
    from ranker.tasks import benchmark as bm
    from ranker.tasks import loaders
    from ranker.tune import btuning
    from ranker.zoo import manifest as zoo

    try:  # every user mistake is found before a model trains
        check_out(args.out)
        names = zoo.list_models(args.manifest or args.checkpoint / "zoo.yaml")
        check_choice(args.target, args.teachers, args.k, names)
        train = loaders.load_dataset(args.data)
        test = None if args.test is None else loaders.load_dataset(args.test)
        if test is not None and test.class_names != train.class_names:
            raise ValueError(f"--test has classes {list(test.class_names)[:5]}, --data {list(train.class_names)[:5]}; "
                             "give both the same classes")
        exported = export.load(args.checkpoint, args.manifest)
        recipe = replace(bm.load_benchmark(exported.config.run.data.benchmark).config.finetune, steps=btuning.STEPS)
        start = time.perf_counter()
        ranking = None
        if args.target is None or args.teachers is None:
            ranking = [r.model for r in Pipeline(exported).rank(train).ranking]
        target = args.target or next(m for m in ranking if m not in (args.teachers or ()))
        teachers = args.teachers or [m for m in ranking if m != target][: args.k or DEFAULT_K]
        rank_seconds = time.perf_counter() - start
        entries = {e.name: e for e in exported.zoo.models}
        teaching = btuning.teach(entries[target], [entries[t] for t in teachers], train, recipe)
    except ValueError as err:  # DatasetError, ZooError and ExportError included
        print(f"tune: {err}", file=sys.stderr)
        return 2
    print(f"target {target}; teachers " + ", ".join(f"{t} (pi {p:.3f})" for t, p in zip(teachers, teaching.pi,
                                                                                            strict=True)))
    tuned = btuning.tune(entries[target], teaching, train, recipe, test, progress=True)

    classes = json.dumps(list(train.class_names))
    state = {k: v.detach().cpu().contiguous() for k, v in tuned.module.state_dict().items()}
    meta = {"target": target, "input_size": str(tuned.input_size), "classes": classes}
    write_atomic(args.out / "model.safetensors", save(state, metadata=meta))
    summary = {
        "dataset": train.id, "target": target, "teachers": teachers, "pi": teaching.pi,
        "logme": {target: teaching.target_evidence} | dict(zip(teachers, teaching.evidence, strict=True)),
        "tradeoff": btuning.TRADEOFF, "temperature": btuning.TEMPERATURE, "recipe": asdict(recipe),
        "input_size": tuned.input_size, "classes": list(train.class_names), "n_train": len(train),
        "test": None if test is None else test.id, "n_test": None if test is None else len(test),
        "test_accuracy": tuned.test_accuracy, "ranking": ranking,
        "seconds": {"rank": rank_seconds, "teach": teaching.seconds, "tune": tuned.seconds},
    }
    write_atomic(args.out / "btuning.json", json.dumps(summary, indent=2).encode())
    title = f"B-Tuning {target} on {train.id}\nteachers: {', '.join(teachers)}"
    write_atomic(args.out / "loss.png", plot_losses(tuned, title))
    accuracy = "" if tuned.test_accuracy is None else f"; held-out accuracy {tuned.test_accuracy:.1f}%"
    print(f"wrote {args.out}/model.safetensors, btuning.json, loss.png{accuracy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
