"""Ranks the model zoo for a labelled image dataset.

The learned ranker is not built yet (issues 4 and 5 of the roadmap). Until it is, this entry point
loads the dataset, extracts every zoo member's frozen features (cached) and prints a summary of
them in zoo order; it prints no ranking, because nothing here can make one honestly yet.

Examples:
    python rank.py                           # the bundled demo dataset (data/demo)
    python rank.py --data path/to/imagefolder
    python rank.py --data fashion_mnist      # a real offline dataset by name
    python rank.py --list-models
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ranker import datasets, features, zoo

DEMO = Path(__file__).resolve().parent / "data" / "demo"


def nearest_mean_accuracy(feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out accuracy of the nearest class mean (cosine) on L2-normalized features."""
    x = torch.nn.functional.normalize(feats.double(), dim=1)
    onehot = torch.nn.functional.one_hot(labels).double()
    sums = onehot.T @ x
    scores = x @ torch.nn.functional.normalize(sums, dim=1).T
    own = torch.nn.functional.normalize(sums[labels] - x, dim=1)  # each sample's class mean without itself
    scores[torch.arange(len(x)), labels] = (x * own).sum(1)
    return float((scores.argmax(1) == labels).double().mean())


def summarize(data: str, manifest: Path) -> None:
    """Prints, per zoo member, the feature width, extraction time and nearest-class-mean accuracy."""
    task = datasets.load_dataset(data)
    labels = torch.as_tensor(task.labels)
    print(f"dataset {task.id}: {len(task)} images, {task.num_classes} classes ({', '.join(task.class_names)})")
    print(f"{'model':28s} {'dim':>5s} {'seconds':>8s} {'NCM acc':>8s}")
    for entry in zoo.load_manifest(manifest).models:
        start = time.perf_counter()
        feats = features.extract(zoo.load_extractor(entry), task)
        seconds = time.perf_counter() - start
        print(f"{entry.name:28s} {feats.shape[1]:5d} {seconds:8.2f} {nearest_mean_accuracy(feats, labels):8.3f}")
    print("NCM acc: leave-one-out nearest-class-mean accuracy of the frozen features (a summary, not a ranking).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEMO), help="ImageFolder directory, images .npz, or a dataset name")
    parser.add_argument("--manifest", type=Path, default=zoo.DEFAULT_MANIFEST, help="zoo manifest YAML")
    parser.add_argument("--list-models", action="store_true", help="print the zoo, one model name per line")
    args = parser.parse_args(argv)
    try:
        if args.list_models:
            print("\n".join(zoo.list_models(args.manifest)))
        else:
            summarize(args.data, args.manifest)
    except (datasets.DatasetError, zoo.ZooError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
