"""Ranks the model zoo for labelled image datasets: which pre-trained models to fine-tune, best first.

The exported ranker (default: checkpoints/v3-default) scores the zoo from one pass of its general encoder
over the data, after FAISS recall over the historical tasks; the top k models are re-ranked with their own
features (k from the checkpoint, chosen inside its training tasks; every candidate for data far from the history;
``--rerank`` overrides). See
ranker/serve/pipeline.py for the stages.

Examples:
    python rank.py                                    # the bundled demo dataset (data/demo)
    python rank.py --data path/to/imagefolder --json ranking.json --plot ranking.png
    python rank.py --data a/ b.npz --rerank 0         # several datasets reuse the loaded models
    python rank.py --data feats.npz                   # general-encoder features + labels: never re-ranked
    python rank.py --checkpoint checkpoints/v3-fennec        # Fennec: a dot product per model, no re-ranking
    python rank.py --list-models                      # the zoo as a table (--names: one name per line)

JSON (``--json``): ``{"dataset", "ranking": [{"model", "score", "stage"}, ...], "timings": {stage: s},
"neighbours": [{"task", "similarity"}], "k"}``; a list of those with several ``--data``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ranker.files import exit_with, write_atomic

if TYPE_CHECKING:  # the heavy imports (torch, timm, FAISS) wait until the arguments are known: --help is instant
    from ranker.serve.pipeline import Ranking
    from ranker.tasks import datasets

ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "data" / "demo"


def _is_features_npz(path: str) -> bool:
    if not (path.endswith(".npz") and zipfile.is_zipfile(path)):
        return False
    with np.load(path, allow_pickle=False) as npz:
        return "features" in npz.files and "images" not in npz.files


def check_output(path: Path, flag: str) -> None:
    """Raises ValueError unless ``path`` can be written: not a folder, and its nearest existing parent a folder
    this process may write into (checked before any model loads, so a typo does not cost a whole ranking)."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name such as {path / 'ranking'}"
                         f"{'.json' if flag == '--json' else '.png'}")
    parent = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} cannot be written ({parent} is not a folder you may write into); "
                         "choose another path")


def warn_small_classes(task: datasets.Task) -> None:
    """One stderr line per dataset with a class of a single sample: its prototype is that one sample."""
    counts = np.bincount(task.labels, minlength=task.num_classes)
    single = [task.class_names[c] for c in np.flatnonzero(counts == 1)]
    if single:
        print(f"rank: warning: {task.id} has a single sample of class(es) {single[:5]}"
              f"{' ...' if len(single) > 5 else ''}; its ranking rests on one image per such class", file=sys.stderr)


def _points(value: float) -> str:
    """Accuracy points to one decimal, with no "-0.0" (a gap that rounds to zero is zero)."""
    return f"{round(value, 1) + 0.0:.1f}"


def table(result: Ranking) -> str:
    """The ranking as an aligned text table (last, so the output ends with it), timings and neighbours above."""
    lines = [f"{result.dataset}: {len(result.ranking)} models, top {result.k} re-ranked with their own features",
             "seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()),
             "nearest historical tasks: " + ", ".join(f"{n.task} ({n.similarity:.3f})" for n in result.neighbours),
             *([f"warning: {result.warning}"] if result.warning else []),
             f"{'rank':>4s}  {'model':28s} {'score':>8s}  {'stage':7s} gap to the best, points [80%]"]
    lines += [f"{i:4d}  {r.model:28s} {r.score:8.3f}  {r.stage:7s} "
              + (f"{_points(r.predicted_gap):>6s} [{_points(r.gap_80[0])}, {_points(r.gap_80[1])}]" if r.gap_80 else "")
              + ("cold: never trained on, placed by its architecture" if r.cold else "")
              for i, r in enumerate(result.ranking, 1)]
    return "\n".join(lines)


def plot(results: list[Ranking], out: Path) -> None:
    """One horizontal bar chart of scores per dataset, best on top; re-ranked models in another colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(len(r.ranking) for r in results) * 0.28 + 1.2
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), height), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        rows = result.ranking[::-1]
        scores = np.array([r.score for r in rows])
        left = scores.min() - 0.05 * (np.ptp(scores) or 1.0)  # scores are relative: bars start below the lowest
        colors = ["tab:orange" if r.stage == "rerank" else "tab:blue" for r in rows]
        ax.barh(range(len(rows)), scores - left, left=left, color=colors)
        ax.set_yticks(range(len(rows)), [r.model for r in rows], fontsize=8)
        ax.set_title(f"{result.dataset}\norange: re-ranked with own features (k={result.k})", fontsize=9)
        ax.set_xlabel("ranker score (higher = fine-tune first)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    write_atomic(out, buffer.getvalue())


def zoo_table(manifest: Path) -> str:
    """The zoo as a table of what a user chooses by: architecture, input size, parameters, features, pre-training
    domain, licence (its SPDX name; the manifest has the whole statement) and pre-training."""
    from ranker.zoo import manifest as zoo

    lines = [f"{'model':26s} {'architecture':24s} {'px':>4s} {'params':>7s} {'dim':>5s}  {'domain':15s} "
             f"{'licence':10s}  pre-training"]
    for e in zoo.load_manifest(manifest).models:
        text = " ".join(e.pretraining.split())
        licence = e.licence.split()[0] if e.licence else "-"
        lines.append(f"{e.name:26s} {e.arch:24s} {e.input_size:4d} {zoo.parameter_count(e) / 1e6:6.2f}M "
                     f"{e.feature_dim:5d}  {e.domain or '-':15s} {licence:10s}  "
                     f"{text if len(text) <= 60 else text[:59] + '…'}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """rank.py's arguments; the defaults are paths, not the package's constants, so that --help imports nothing."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(DEMO)],
                        help="ImageFolder directories, .npz files (images or general-encoder features, with labels) "
                             "or real dataset names")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "v3-default",
                        help="exported ranker folder (default: %(default)s)")
    parser.add_argument("--manifest", type=Path,
                        help="zoo manifest YAML (default: the checkpoint's own zoo.yaml, the zoo it was trained on; "
                             "a manifest that extends it adds members cold)")
    parser.add_argument("--rerank", type=int, metavar="K",
                        help="re-rank the top K (default: the checkpoint's k; every candidate for data far from every "
                             "historical task)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the ranking(s) as JSON here")
    parser.add_argument("--plot", type=Path, metavar="OUT", help="write a bar chart (PNG) of the scores here")
    parser.add_argument("--list-models", action="store_true",
                        help="print the zoo as a table: architecture, input px, parameters, features, pre-training")
    parser.add_argument("--names", action="store_true", help="print the zoo's model names, one per line (for scripts)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    from ranker.serve import export
    from ranker.serve.pipeline import Pipeline
    from ranker.tasks import datasets, loaders
    from ranker.zoo import manifest as zoo

    try:
        if args.list_models or args.names:  # the zoo rank.py would load: the checkpoint's own unless --manifest
            manifest = args.manifest or args.checkpoint / "zoo.yaml"
            print(zoo_table(manifest) if args.list_models else "\n".join(zoo.list_models(manifest)))
            return 0
        for flag, path in (("--json", args.json), ("--plot", args.plot)):
            if path is not None:
                check_output(path, flag)
        inputs = []  # checked before any model loads: a typo fails fast
        for spec in args.data:
            is_features = _is_features_npz(spec)
            inputs.append(loaders.load_features_npz(spec) if is_features else loaders.load_dataset(spec))
            if not is_features:
                warn_small_classes(inputs[-1])
        if args.rerank and all(isinstance(item, tuple) for item in inputs):
            raise datasets.DatasetError("re-ranking needs images and every --data holds features; drop --rerank or "
                                        "pass the images")
        pipe = Pipeline(export.load(args.checkpoint, args.manifest), args.rerank)
        results = [pipe.rank_features(*item) if isinstance(item, tuple) else pipe.rank(item) for item in inputs]
    except (datasets.DatasetError, zoo.ZooError, export.ExportError, ValueError) as err:
        print(f"rank: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(table(result))
    if args.json:
        payload = [r.to_json() for r in results]
        write_atomic(args.json, json.dumps(payload[0] if len(payload) == 1 else payload, indent=2).encode())
    if args.plot:
        plot(results, args.plot)
    return 0


def cli() -> None:
    """``python rank.py`` and the ``ptm-rank`` command: exits with main's status."""
    exit_with(main)


if __name__ == "__main__":
    cli()
