"""Builds data/demo/: a small 5-class ImageFolder cut from the Fashion-MNIST test split.

Run from the repository root:

    python -m data.make_demo

The classes trouser, pullover, sandal, bag and ankle_boot get 50 images each, drawn without replacement with
``numpy.random.default_rng(0)`` and saved as 28x28 grayscale PNGs named by their index in the test split. Re-running
empties the five class folders and writes the same files again.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ranker.tasks.loaders import fashion_mnist

DEMO_DIR = Path(__file__).resolve().parent / "demo"
CLASSES = {"trouser": 1, "pullover": 2, "sandal": 5, "bag": 8, "ankle_boot": 9}  # folder name -> Fashion-MNIST label
PER_CLASS = 50
SEED = 0


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    task = fashion_mnist("test")
    rng = np.random.default_rng(SEED)
    for folder, label in CLASSES.items():
        chosen = np.sort(rng.choice(np.flatnonzero(task.labels == label), size=PER_CLASS, replace=False))
        out = DEMO_DIR / folder
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for i in chosen:
            Image.fromarray(task.images[i]).save(out / f"{i:05d}.png")
    print(f"wrote {len(CLASSES) * PER_CLASS} images to {DEMO_DIR}")


if __name__ == "__main__":
    main()
