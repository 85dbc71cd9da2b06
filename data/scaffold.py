"""Writes a new benchmark's ``benchmark.yaml`` from a zoo manifest and ImageFolder directories: one task per folder.

A team's own benchmark starts here: each folder (``root/<class>/<image>``) becomes one task of all its classes,
split per class into a training half and a held-out half (at most ``--per-class`` images per class are kept), in a
cross-validation group of its own unless ``--group`` puts several folders in one. ``--train`` folders are what a
ranker learns from, ``--test`` folders only evaluate it. The fine-tuning recipe is the default one at each member's
native input size; edit ``finetune:`` in the file to change it (and its ``name``, which every record carries).

Run:
    python -m data.scaffold runs/mybench --manifest my_zoo.yaml --train data/a data/b data/c --test data/d
    python -m data.scaffold runs/mybench --manifest my_zoo.yaml --train a b c --group animals a b
Then build its history: ``python -m data.build_history --benchmark runs/mybench --kind stats`` and the other kinds
(``--kind logme``, ``--kind finetune``, or ``--import results.csv`` for results you already have), ``--merge``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from ranker.files import write_atomic
from ranker.tasks import benchmark as bm
from ranker.tasks import loaders
from ranker.zoo import manifest as zoo

HEADER = """\
# Written by `python -m data.scaffold`. A task is one folder (`dataset`) with all its classes (`classes: []`), per
# class `n_train` images to fine-tune on (0: half) and `n_test` held out (0: the rest); `group` is what grouped
# cross-validation holds out whole; `role: test` tasks only evaluate. `finetune` is the ground truth's recipe
# (`max_input_size: 0`: each member's native size); give it a new `name` when you change a value.
"""


def task_id(folder: Path, taken: set[str]) -> str:
    """A task id from the folder's name (lower case, ``[a-z0-9_-]``), unique among ``taken``."""
    base = re.sub(r"[^a-z0-9_-]+", "-", folder.name.lower()).strip("-") or "task"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def scaffold(out: Path, manifest: Path, train: list[Path], test: list[Path], groups: dict[Path, str],
             general_encoder: str | None = None, per_class: int = 100) -> bm.BenchmarkConfig:
    """Writes ``out/benchmark.yaml`` and returns its config.

    Args:
        groups: folder -> cross-validation group, for folders that share one; every other folder is its own group.
        general_encoder: the zoo member whose features summarize each task; default the manifest's first member.

    Raises:
        ValueError: a folder is not a usable ImageFolder (DatasetError), the manifest does not load (ZooError),
            the general encoder is not in it, a folder is given twice or ``out`` already holds a benchmark.
    """
    if (out / "benchmark.yaml").exists():
        raise ValueError(f"{out / 'benchmark.yaml'} exists; pass a new folder (or delete that file)")
    if not train:
        raise ValueError("give at least one --train folder: a ranker learns from training tasks")
    folders = [f.resolve() for f in train + test]
    if len(set(folders)) < len(folders):
        raise ValueError("a folder is given twice; give each folder once, as --train or --test")
    if not manifest.is_file():
        raise ValueError(f"zoo manifest {manifest} does not exist; pass a manifest YAML (see docs/zoo-and-data.md)")
    members = [e.name for e in zoo.load_manifest(manifest).models]
    encoder = general_encoder or members[0]
    if encoder not in members:
        raise ValueError(f"general encoder {encoder!r} is not in {manifest}; its models: {', '.join(members)}")
    unknown = sorted(str(f) for f in groups if f.resolve() not in folders)
    if unknown:
        raise ValueError(f"--group names folder(s) {unknown} that are not among --train / --test")
    group_of = {f.resolve(): name for f, name in groups.items()}
    tasks, taken = [], set()
    for folder, role in [(f, "train") for f in train] + [(f, "test") for f in test]:
        task = loaders.load_image_folder(folder)  # one line (DatasetError) for a missing, empty or one-class folder
        counts = [int((task.labels == c).sum()) for c in range(task.num_classes)]
        if min(counts) < 2:
            small = task.class_names[counts.index(min(counts))]
            raise ValueError(f"{folder}: class {small!r} has {min(counts)} image; a task needs at least 2 per class "
                             "(one to train on, one to measure)")
        tid = task_id(folder, taken)
        taken.add(tid)
        tasks.append(bm.TaskSpec(id=tid, role=role, dataset=str(folder.resolve()),
                                 group=group_of.get(folder.resolve(), tid)))
    config = bm.BenchmarkConfig(name=out.name, manifest=str(manifest.resolve()), general_encoder=encoder,
                                pool_per_class=per_class, finetune=bm.FinetuneRecipe(name="finetune-native-v1",
                                                                                     max_input_size=0),
                                tasks=tasks)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "benchmark.yaml", (HEADER + OmegaConf.to_yaml(OmegaConf.structured(config))).encode())
    bm.load_config(out / "benchmark.yaml")  # what every later step reads must load
    return config


def _groups(pairs: list[list[str]] | None) -> dict[Path, str]:
    groups: dict[Path, str] = {}
    for name, *folders in pairs or ():
        if not folders:
            raise ValueError(f"--group {name}: name the folders after the group's name")
        groups.update({Path(f): name for f in folders})
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the new benchmark's folder (pass it as --benchmark later)")
    parser.add_argument("--manifest", type=Path, required=True, help="the zoo manifest YAML")
    parser.add_argument("--train", type=Path, nargs="+", default=[], help="ImageFolders a ranker learns from")
    parser.add_argument("--test", type=Path, nargs="*", default=[], help="ImageFolders kept for evaluation only")
    parser.add_argument("--group", nargs="+", action="append", metavar=("NAME", "FOLDER"),
                        help="put these folders in one cross-validation group (default: a group per folder)")
    parser.add_argument("--general-encoder", help="zoo member that summarizes each task (default: the first)")
    parser.add_argument("--per-class", type=int, default=100, help="images kept per class (0: all)")
    args = parser.parse_args(argv)
    try:
        config = scaffold(args.out, args.manifest, args.train, args.test, _groups(args.group), args.general_encoder,
                          args.per_class)
    except ValueError as err:  # DatasetError and ZooError included
        print(f"scaffold: {err}", file=sys.stderr)
        return 2
    roles = [t.role for t in config.tasks]
    print(f"wrote {args.out / 'benchmark.yaml'}: {roles.count('train')} training and {roles.count('test')} test "
          f"tasks in {len({t.group for t in config.tasks})} groups, general encoder {config.general_encoder}; "
          f"next: python -m data.build_history --benchmark {args.out} --kind stats")
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
