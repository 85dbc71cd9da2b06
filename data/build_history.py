"""Builds a benchmark's history: fine-tuning and linear-probe accuracy of every zoo model on every task.

Kinds (``--kind``):
    stats         general-encoder class prototypes + summary of every task's training part, and every zoo
                  model's own class prototypes (float16), into stats.safetensors / model_stats.safetensors
    linear_probe  logistic regression on frozen features (native input size), accuracy on the held-out part
    logme         LogME (ranker.transfer) of each model's frozen features on each task's training part: the raw
                  evidence that Ranker v2 learns to weigh against the prior (issue 15); no held-out part used
    finetune      the benchmark's ``finetune`` recipe (benchmark.FinetuneRecipe), Lightning, CUDA when present
    proxy         normalized mean rank (``ranker.transfer.aggregate``) of the PROXY_ESTIMATORS' scores over the
                  zoo on each task's training part: a label that costs no training

Every (task, model) result is written as soon as it is measured, by an atomic rewrite of the run's own file
``parts/<kind>-<i>of<n>.csv`` (``0of1`` without --shard); a pair already in history.csv or in any part is
skipped (checked again just before it is measured), so a stopped run resumes and concurrent runs rarely
repeat work. With ``--shard i/n`` a run takes the pairs of the chosen role and the whole zoo whose task index plus
model index is i modulo n (0-based): each member's pairs spread evenly over the shards, so shards of a zoo whose members
cost very different amounts still end together. A fine-tuning record of another recipe than the
benchmark's (``finetune.name``) does not count as measured: after a recipe change the builder measures those pairs
again, and their new records replace the old at ``--merge``. Only ``--merge`` writes history.csv: it folds
every part into it and deletes the parts. A builder holds its part's lock (``.lock`` beside it) until it ends, so a
second builder of the same kind and shard, and a ``--merge``, are refused meanwhile.

Run (the embedded default; costs in data/benchmarks/offline/README.md):
    python -m data.build_history --kind stats
    python -m data.build_history --kind linear_probe
    python -m data.build_history --kind logme
    python -m data.build_history --kind finetune --role test
    python -m data.build_history --kind proxy
    python -m data.build_history --merge
    python -m data.build_history --kind finetune --role test --shard 3/8   # e.g. SLURM_ARRAY_TASK_ID=3 of 8
    python -m data.build_history --kind finetune --role test --seed 1      # a second run of every pair: noise
    python -m data.build_history --kind finetune --role train --plan       # pairs left, hours from the records
    python -m data.build_history --merge
    python -m data.build_history --benchmark path/to/folder --import results.csv   # results a team already has

An import takes a CSV with the columns task, model, accuracy (fine-tuning top-1, percent) and optionally seed,
recipe, input_size, epochs, lr, n_train, n_test, wall_s and device; its records say ``imported from <file>`` in
``source``, and the builder then skips those pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ranker import transfer
from ranker.files import locked
from ranker.tasks import benchmark as bm
from ranker.tasks import features, stats
from ranker.tasks.history import HistoryStore, Record, parse_field
from ranker.tune.finetune import finetune
from ranker.zoo import manifest as zoo

PROXY_ESTIMATORS = ("logme", "hscore", "reg_hscore", "nleep", "gbc", "transrate", "sfda", "parc")
"""Every feature-based estimator: LEEP and NCE need source heads that most of the offline zoo lacks."""

SOURCE = "data/build_history.py"
"""The ``source`` of every record this builder measures (imports say ``imported from <file>``)."""

FROZEN_KINDS = ("linear_probe", "logme")
"""Kinds measured on frozen features, model by model (each extractor built once)."""

LINEAR_PROBE = {"name": "linear_probe-v1", "C": 1.0, "max_iter": 2000}
"""Standardized frozen features (native input size) → scikit-learn multinomial LogisticRegression (lbfgs)."""


class Stopped(Exception):
    """A signal stopped the build (SIGTERM: a cluster's time limit, ``kill``); its text says what was measured."""


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def part_features(extractor: zoo.FrozenExtractor, part: bm.TaskPart) -> torch.Tensor:
    """Frozen features of a task part: its pool's features (extracted once, cached), rows ``part.indices``."""
    return features.extract(extractor, part.pool)[torch.as_tensor(part.indices)]


def training_features(extractor: zoo.FrozenExtractor, part: bm.TaskPart) -> torch.Tensor:
    """Frozen features of a task's training part, cached under the part itself: what ``--kind stats``, ``logme`` and
    ``proxy`` read, and ``ranker.evaluate`` too (a part is a fraction of its pool, which matters at native sizes)."""
    return features.extract(extractor, part.task, progress=False)


def linear_probe(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> float:
    """Held-out accuracy (percent) of the LINEAR_PROBE recipe."""
    scaler = StandardScaler().fit(train_x.numpy())
    clf = LogisticRegression(C=LINEAR_PROBE["C"], max_iter=LINEAR_PROBE["max_iter"])
    clf.fit(scaler.transform(train_x.numpy()), train_y)
    return 100.0 * float((clf.predict(scaler.transform(test_x.numpy())) == test_y).mean())


def part_path(root: Path, kind: str, shard: tuple[int, int]) -> Path:
    """The file a builder run of ``kind`` and ``shard`` (index, count) writes its records to."""
    return root / "parts" / f"{kind}-{shard[0]}of{shard[1]}.csv"


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Holds ``out``'s lock file (``.lock`` beside it) while a builder writes that part: two builders of one kind and
    shard (with other ``--models``) would each rewrite the file with only their own records, and ``--merge`` while a
    builder runs would fold a part that the builder then writes again.

    Raises:
        ValueError: another live process holds the lock.
    """
    with locked(out.with_suffix(".lock"), wait=False) as held:
        if not held:
            raise ValueError(f"another builder is writing {out}; give this one another --shard i/n (or let that "
                             "one end)")
        yield


def _done_store(root: Path) -> HistoryStore:
    store = HistoryStore.load(root / "history.csv") if (root / "history.csv").is_file() else HistoryStore()
    for part in sorted((root / "parts").glob("*.csv"), key=lambda path: path.stat().st_mtime):
        store.merge(HistoryStore.load(part))  # the newest part last: a pair measured again replaces its older record
    return store


def _current(done: HistoryStore, key: tuple[str, str, str, int], recipe: str) -> bool:
    """Whether ``done`` holds the pair ``key`` as measured now: a fine-tuning record counts only under the benchmark's
    recipe ``recipe`` (or imported), so after a recipe change the builder measures its stale pairs again and their new
    records replace the old ones at ``--merge``."""
    record = done.get(*key)
    return record is not None and (record.kind != "finetune" or record.recipe == recipe
                                   or record.source.startswith("imported"))


def pending(bench: bm.Benchmark, kind: str, role: str, shard: tuple[int, int] = (0, 1),
            models: list[str] | None = None, seed: int | None = None
            ) -> tuple[bm.FinetuneRecipe, list[tuple[bm.TaskSpec, str]]]:
    """The recipe a build of these arguments runs (``seed`` in place of its own) and the (task, model) pairs it has
    left to measure, in the order it measures them (see :func:`build_records`)."""
    if seed is not None and kind != "finetune":
        raise ValueError("--seed repeats fine-tuning runs; use it with --kind finetune")
    recipe = bench.config.finetune if seed is None else dataclasses.replace(bench.config.finetune, seed=seed)
    run_seed = recipe.seed if kind == "finetune" else 0
    index, count = shard
    specs = [t for t in bench.config.tasks if role == "all" or t.role == role]
    mine = [(s, m) for t, s in enumerate(specs) for j, m in enumerate(bench.models) if (t + j) % count == index]
    done = _done_store(bench.root)
    todo = [(s, m) for s, m in mine if not _current(done, (s.id, m, kind, run_seed), recipe.name)
            and (models is None or m in models)]
    if kind in FROZEN_KINDS:  # model-major: each extractor is built once and its pools' features are read once
        todo.sort(key=lambda pair: bench.models.index(pair[1]))
    # finetune stays task-major (it loads weights per pair anyway): a stopped run leaves whole tasks measured
    return recipe, todo


def plan(bench: bm.Benchmark, kind: str, role: str, shard: tuple[int, int] = (0, 1),
         models: list[str] | None = None, seed: int | None = None) -> list[str]:
    """What a build of these arguments has left, per member: pairs, and the hours they take at the median wall
    seconds of the member's records of ``kind`` that this builder measured so far on this machine's device kind (CPU
    or CUDA) and, for ``finetune``, under the benchmark's recipe; the lines to print."""
    recipe, todo = pending(bench, kind, role, shard, models, seed)
    device = features.best_device().type
    left = Counter(model for _, model in todo)
    seconds: dict[str, list[float]] = {}
    for r in _done_store(bench.root).records(kind):
        if (r.source == SOURCE and r.device.split(":")[0] == device and math.isfinite(r.wall_s)
                and (kind != "finetune" or r.recipe == recipe.name)):
            seconds.setdefault(r.model, []).append(r.wall_s)
    lines = [f"{bench.config.name} · {kind} · role {role}" + (f" · seed {seed}" if seed is not None else "")
             + f" · shard {shard[0]}/{shard[1]}: {len(todo)} pairs left",
             f"{'member':28s} {'pairs':>6s} {'s/pair':>8s} {'hours':>6s}  (median of the records so far on {device})"]
    total, unknown = 0.0, []
    for model in (m for m in bench.models if m in left):
        if model in seconds:
            median = float(np.median(seconds[model]))
            total += left[model] * median / 3600
            lines.append(f"{model:28s} {left[model]:6d} {median:8.1f} {left[model] * median / 3600:6.2f}")
        else:
            unknown.append(model)
            lines.append(f"{model:28s} {left[model]:6d} {'?':>8s} {'?':>6s}")
    lines.append(f"total: {total:.2f} hours of one builder" + (
        f", plus {len(unknown)} member(s) with no record yet (benchmarks/finetune_cost.py measures a step)"
        if unknown else ""))
    return lines


def build_records(bench: bm.Benchmark, kind: str, role: str, shard: tuple[int, int] = (0, 1),
                  models: list[str] | None = None, seed: int | None = None) -> int:
    """Measures the missing (task, model) pairs of this shard (of ``models`` only, when given) into its part file.

    ``seed`` (finetune only) replaces the recipe's seed: a run with another seed measures every pair again, as a
    record of its own, which is how the noise of the ground truth is measured.

    Returns:
        The number of pairs measured.
    """
    recipe, todo = pending(bench, kind, role, shard, models, seed)
    run_seed = recipe.seed if kind == "finetune" else 0
    out = part_path(bench.root, kind if run_seed == 0 else f"{kind}-seed{run_seed}", shard)
    with writing(out):
        own = HistoryStore.load(out) if out.is_file() else HistoryStore()
        before = len(own)
        try:
            return _measure(bench, kind, todo, shard, recipe, run_seed, own, out)
        except Stopped as stop:
            raise Stopped(f"{stop} after {len(own) - before} of this run's {len(todo)} pairs") from None


def _measure(bench: bm.Benchmark, kind: str, todo: list[tuple[bm.TaskSpec, str]], shard: tuple[int, int],
             recipe: bm.FinetuneRecipe, run_seed: int, own: HistoryStore, out: Path) -> int:
    """Measures the pairs ``todo`` into ``own``, saved to ``out`` after each; returns how many it measured."""
    entries = bench.entries
    extractor, measured = None, 0
    for spec, model in (bar := tqdm(todo, desc=f"{kind} {shard[0]}/{shard[1]}", unit="pair")):
        if _current(_done_store(bench.root), (spec.id, model, kind, run_seed), recipe.name):  # measured meanwhile
            continue
        bar.set_postfix_str(f"{model} · {spec.id}")
        train, test = bm.task_parts(spec, bench.config)
        start = time.time()
        metric = "top1_accuracy"
        if kind in FROZEN_KINDS:
            if extractor is None or extractor.entry.name != model:
                extractor = zoo.load_extractor(entries[model])
            if kind == "linear_probe":
                value = linear_probe(part_features(extractor, train), train.labels, part_features(extractor, test),
                                     test.labels)
                name = LINEAR_PROBE["name"]
            else:
                value = transfer.get("logme")(training_features(extractor, train), torch.as_tensor(train.labels))
                name, metric = "logme-v1", "logme"
            size, device = entries[model].input_size, str(features.best_device())
            epochs, lr = 0, math.nan
        else:
            value, size, device = finetune(entries[model], train.task, test.task, recipe)
            n = len(train.indices)
            epochs = math.ceil(recipe.steps * min(recipe.batch_size, n) / n)  # passes over the data
            name, lr = recipe.name, recipe.member_lr(model)
        own.add(Record(
            task=spec.id, model=model, kind=kind, metric=metric, value=value, recipe=name,
            epochs=epochs, lr=lr, input_size=size, n_train=len(train.indices), n_test=len(test.indices),
            seed=run_seed, wall_s=time.time() - start, device=device, source=SOURCE,
        ))
        own.save(out)
        measured += 1
    return measured


def build_proxy(bench: bm.Benchmark, role: str) -> int:
    """Adds ``proxy`` records over the whole zoo for every task of ``role`` not yet fully scored; returns records.

    Always the whole zoo: a proxy is a rank among the models scored together.
    """
    out = part_path(bench.root, "proxy", (0, 1))
    with writing(out):
        done = _done_store(bench.root)
        own = HistoryStore.load(out) if out.is_file() else HistoryStore()
        models = bench.models
        specs = [t for t in bench.config.tasks if (role == "all" or t.role == role)
                 and any((t.id, m, "proxy", 0) not in done for m in models)]
        if not specs:
            return 0
        entries = bench.entries
        extractors = {m: zoo.load_extractor(entries[m]) for m in models}
        for spec in tqdm(specs, desc="proxy", unit="task"):
            train = bm.task_parts(spec, bench.config)[0]
            labels = torch.as_tensor(train.labels)
            start = time.time()
            scores = {name: np.full(len(models), np.nan) for name in PROXY_ESTIMATORS}
            for j, model in enumerate(models):
                feats = training_features(extractors[model], train)
                for name in PROXY_ESTIMATORS:
                    try:
                        scores[name][j] = transfer.get(name)(feats, labels)
                    except ValueError as err:  # a degenerate case of one estimator: the others still rank the model
                        tqdm.write(f"{spec.id} · {model}: {name} skipped ({err})")
            value = transfer.aggregate(scores)
            seconds = (time.time() - start) / len(models)
            own.add(Record(
                task=spec.id, model=model, kind="proxy", metric="proxy_score", value=float(v), recipe="proxy-v1",
                input_size=entries[model].input_size, n_train=len(train.indices), wall_s=seconds,
                device=str(features.best_device()), source="normalized mean rank of " + " ".join(PROXY_ESTIMATORS),
            ) for model, v in zip(models, value, strict=True))
            own.save(out)
        return len(specs) * len(models)


def build_stats(bench: bm.Benchmark) -> None:
    """Writes stats.safetensors (general encoder) and model_stats.safetensors (the whole zoo), from the training
    parts' features (``training_features``)."""
    entries = bench.entries
    parts = [(spec.id, bm.task_parts(spec, bench.config)[0]) for spec in bench.config.tasks]
    general, per_model, general_sha = {}, {}, ""
    bar = tqdm(total=len(bench.models) * len(parts), desc="stats", unit="part")
    for model in bench.models:
        extractor = zoo.load_extractor(entries[model])
        for task_id, part in parts:
            bar.set_postfix_str(f"{model} · {task_id}")
            protos = stats.class_prototypes(training_features(extractor, part), torch.as_tensor(part.labels),
                                            len(part.class_names))
            bar.update()
            per_model[f"{task_id}/{model}"] = protos.half()
            if model == bench.config.general_encoder:
                general_sha = extractor.weights_sha256
                general[f"{task_id}/prototypes"] = protos
                general[f"{task_id}/summary"] = stats.summary_vector(protos)
    bar.close()
    meta = {"general_encoder": bench.config.general_encoder, "manifest": bench.config.manifest,
            "general_encoder_sha256": general_sha}
    features.save_atomic(general, bench.root / "stats.safetensors", meta)
    features.save_atomic(per_model, bench.root / "model_stats.safetensors", meta)


def merge_parts(bench: bm.Benchmark) -> int:
    """Folds every ``parts/*.csv`` into history.csv, then deletes the parts; returns the record count. A pair's record
    in a part replaces its record in history.csv, and the most recently written part's record wins among parts.

    Raises:
        ValueError: a builder is still writing a part, or a record names a task or model the benchmark does not have
            (nothing is written then).
    """
    root = bench.root
    with contextlib.ExitStack() as held:  # every part's lock, so no builder writes one while it is folded in
        # a builder that has not finished its first pair holds a lock and no part yet: its lock is taken too
        parts = sorted({p.with_suffix(".csv") for p in (root / "parts").glob("*") if p.suffix in (".csv", ".lock")})
        for part in parts:
            held.enter_context(writing(part))
        store = _done_store(root)
        tasks = {t.id for t in bench.config.tasks}
        for what, known, named in (("tasks", tasks, {r.task for r in store.records()}),
                                   ("models", set(bench.models), {r.model for r in store.records()})):
            if unknown := sorted(named - known):
                raise ValueError(f"history of {root} names {what} {unknown} that {root / 'benchmark.yaml'} does not "
                                 "have; fix or remove those rows, then merge again")
        store.save(root / "history.csv")
        for part in parts:
            part.unlink(missing_ok=True)
            part.with_suffix(".lock").unlink()
    return len(store)


IMPORT_REQUIRED = ("task", "model", "accuracy")
IMPORT_OPTIONAL = ("seed", "recipe", "input_size", "epochs", "lr", "n_train", "n_test", "wall_s", "device")
"""Columns of a results CSV to import: accuracy is fine-tuning top-1 accuracy in percent; a blank optional cell
takes the history's default (seed 0, recipe ``imported``)."""


def import_results(bench: bm.Benchmark, path: Path) -> int:
    """Adds a team's past fine-tuning results (a CSV of IMPORT_REQUIRED and any IMPORT_OPTIONAL columns) to the
    benchmark as ``finetune`` records whose source says they were imported, in ``parts/finetune-imported.csv``.

    Returns:
        The number of records imported.

    Raises:
        ValueError: the first problem (a missing or unknown column, an unknown task or model, an accuracy that is
            not a number from 0 to 100, a row twice, a pair already in the history), by line; nothing is written.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if missing := [c for c in IMPORT_REQUIRED if c not in columns]:
        raise ValueError(f"{path} lacks column(s) {missing}; it needs {list(IMPORT_REQUIRED)} and may add "
                         f"{list(IMPORT_OPTIONAL)}")
    if unknown := [c for c in columns if c not in IMPORT_REQUIRED + IMPORT_OPTIONAL]:
        raise ValueError(f"{path} has column(s) {unknown} that an import does not take; use {list(IMPORT_REQUIRED)} "
                         f"and {list(IMPORT_OPTIONAL)}")
    tasks, done, store = {t.id for t in bench.config.tasks}, _done_store(bench.root), HistoryStore()
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        if row["task"] not in tasks:
            raise ValueError(f"{where}: task {row['task']!r} is not in {bench.root / 'benchmark.yaml'}")
        if row["model"] not in bench.models:
            raise ValueError(f"{where}: model {row['model']!r} is not in {bench.config.manifest}; its models: "
                             f"{', '.join(bench.models)}")
        try:
            accuracy = float(row["accuracy"])
        except ValueError:
            raise ValueError(f"{where}: accuracy holds {row['accuracy']!r}, not a number") from None
        try:
            extra = {c: parse_field(c, row[c]) for c in IMPORT_OPTIONAL if row.get(c)}
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if not 0.0 <= accuracy <= 100.0:  # NaN fails too
            raise ValueError(f"{where}: accuracy {row['accuracy']} is not a percentage from 0 to 100")
        record = Record(task=row["task"], model=row["model"], kind="finetune", metric="top1_accuracy",
                        value=accuracy, **{"recipe": "imported", **extra}, source=f"imported from {path.name}")
        if record.key in store or record.key in done:
            raise ValueError(f"{where}: ({record.task}, {record.model}, seed {record.seed}) is "
                             f"{'twice in the file' if record.key in store else 'already in the history'}")
        store.add(record)
    out = part_path(bench.root, "finetune", (0, 1)).with_name("finetune-imported.csv")
    own = HistoryStore.load(out) if out.is_file() else HistoryStore()
    own.merge(store)
    own.save(out)
    return len(store)


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**32:
        raise argparse.ArgumentTypeError(f"--seed {text}: give an integer from 0 to 2**32 - 1")
    return int(text)


def shard_arg(text: str) -> tuple[int, int]:
    """``--shard i/n`` as (i, n), for argparse: a long build split over n processes, this one the i-th."""
    index, count = (int(x) for x in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    parser.add_argument("--kind", choices=["stats", "linear_probe", "logme", "finetune", "proxy"])
    parser.add_argument("--role", choices=["train", "test", "all"], default="all", help="which tasks")
    parser.add_argument("--models", nargs="*", help="linear_probe/logme/finetune: only these zoo members")
    parser.add_argument("--shard", type=shard_arg, default=(0, 1), help="i/n: this run's share of the pairs")
    parser.add_argument("--seed", type=_seed, help="finetune: this seed instead of the recipe's (repeat runs)")
    parser.add_argument("--plan", action="store_true",
                        help="print the pairs this build has left and their hours from the records so far, and stop")
    parser.add_argument("--merge", action="store_true", help="fold parts/*.csv into history.csv and stop")
    parser.add_argument("--import", dest="results", type=Path, metavar="CSV",
                        help="add past fine-tuning results (columns task, model, accuracy; optional "
                             f"{', '.join(IMPORT_OPTIONAL)}) and stop")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)  # Lightning's own handler, during a fit, calls this one too
    try:
        bench = bm.load_benchmark(args.benchmark)
        if args.merge:
            print(f"{bench.root / 'history.csv'}: {merge_parts(bench)} records; train on it with "
                  f"`python train.py data.benchmark={bench.argument}`")
            return
        if args.results:
            n = import_results(bench, args.results)
            print(f"{n} imported into {bench.root / 'parts'}; fold them in with "
                  f"`python -m data.build_history --benchmark {bench.argument} --merge`")
            return
        if args.kind is None:
            raise ValueError("pass --kind stats, linear_probe, logme, finetune or proxy (or --merge)")
        unknown = sorted(set(args.models or ()) - set(bench.models))
        if unknown:
            raise ValueError(f"models {unknown} are not in {bench.config.manifest}; see its model names")
        if args.plan:
            if args.kind not in FROZEN_KINDS + ("finetune",):
                raise ValueError(f"--plan estimates --kind linear_probe, logme or finetune, not {args.kind}")
            print("\n".join(plan(bench, args.kind, args.role, args.shard, args.models, args.seed)))
            return
        if args.kind in ("stats", "proxy") and (args.models or args.shard != (0, 1)):
            raise ValueError(f"--kind {args.kind} covers the whole zoo in one run; drop --models and --shard")
        if args.kind == "stats":
            build_stats(bench)
            print(f"wrote {bench.root / 'stats.safetensors'} and model_stats.safetensors for "
                  f"{len(bench.config.tasks)} tasks; next: --kind logme and --kind finetune")
            return
        if args.kind == "proxy":
            n = build_proxy(bench, args.role)
        else:
            n = build_records(bench, args.kind, args.role, args.shard, args.models, args.seed)
    except ValueError as err:  # ZooError, HistoryError and DatasetError included: a problem the user can fix
        print(f"build_history: {err}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stop:  # a stopped build must not look like a finished one to a scheduler
        print(f"build_history: stopped by {stop}; every measured pair is kept: rerun the same command to measure "
              "the rest", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    print(f"{n} measured into {bench.root / 'parts'}; once every builder has ended, fold them in with "
          f"`python -m data.build_history --benchmark {bench.argument} --merge`")


if __name__ == "__main__":
    main()
