"""Does archi2vec separate the zoo's architecture families? The v2 zoo's vectors in 2-D, and their similarities.

Computes every v2 member's vector (:func:`ranker.zoo.archi2vec.zoo_vectors`, timed), standardizes each slot over
the zoo (slots constant over the zoo are dropped), projects to the first two principal components and draws each
member labelled and coloured by family. Prints the mean pairwise cosine similarity of the raw vectors within and
between families, and how often a member's nearest neighbour by cosine is of its own family: among all other
members, and among members of another architecture (which rules out a same-architecture twin that differs only
in its pre-training data).

Run:
    python benchmarks/archi2vec_plot.py                      # writes benchmarks/archi2vec.png, a few seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ranker.zoo import archi2vec  # noqa: E402
from ranker.zoo import manifest as zoo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
V2 = ROOT / "ranker" / "configs" / "zoo" / "v2.yaml"

FAMILIES: tuple[tuple[str, str], ...] = (
    ("efficientnet", "EfficientNet"),
    ("mobilenet", "MobileNet"),
    ("lcnet", "MobileNet"),
    ("vgg", "VGG"),
    ("resnet", "ResNet"),
    ("convnext", "ConvNeXt"),
    ("vit", "ViT"),
    ("byobnet", "ByobNet"),
)
"""(substring of a timm architecture name, family), first match wins. PP-LCNet counts as a MobileNet: MobileNetV1's
depthwise-separable blocks with MobileNetV3's hard-swish and squeeze-excitation, built by timm's MobileNetV3 class."""


def family(arch: str) -> str:
    """The architecture family of a timm architecture name; the name itself when no family matches."""
    return next((fam for key, fam in FAMILIES if key in arch), arch)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities ``[M, M]`` of the rows of ``vectors``."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=1)
    return unit @ unit.T


def nearest_same_family(vectors: torch.Tensor, families: list[str], archs: list[str], other_arch: bool) -> list[bool]:
    """Per member whose family has another member eligible as neighbour: is its cosine nearest neighbour (itself
    excluded; with ``other_arch``, members of its own architecture excluded too) of its own family?"""
    sims = cosine_matrix(vectors)
    hits = []
    for i, (fam, arch) in enumerate(zip(families, archs, strict=True)):
        eligible = [j for j in range(len(families)) if j != i and not (other_arch and archs[j] == arch)]
        if not any(families[j] == fam for j in eligible):
            continue
        hits.append(families[max(eligible, key=lambda j: sims[i, j].item())] == fam)
    return hits


def within_between(vectors: torch.Tensor, families: list[str]) -> tuple[float, float]:
    """Mean cosine similarity over pairs of distinct members of the same family, and over pairs across families."""
    sims = cosine_matrix(vectors)
    within, between = [], []
    for i in range(len(families)):
        for j in range(i + 1, len(families)):
            (within if families[i] == families[j] else between).append(sims[i, j].item())
    return sum(within) / len(within), sum(between) / len(between)


def project_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(PCA coordinates ``[M, 2]`` of the slot-standardized vectors, share of variance of each component)."""
    x = vectors.double()
    std = x.std(dim=0)
    x = (x[:, std > 0] - x[:, std > 0].mean(dim=0)) / std[std > 0]
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return x @ vh[:2].T, (s[:2] ** 2) / (s**2).sum()


def clusters(coords: torch.Tensor, reach: tuple[float, float]) -> list[list[int]]:
    """Members whose labels would collide: chains of points closer than ``reach`` (x, y) in both coordinates."""
    groups: list[list[int]] = []
    for i in range(len(coords)):
        near = [g for g in groups if any((coords[i] - coords[j]).abs().lt(torch.tensor(reach)).all() for j in g)]
        merged = [i] + [j for g in near for j in g]
        groups = [g for g in groups if g not in near] + [sorted(merged)]
    return groups


def plot(coords: torch.Tensor, share: torch.Tensor, names: list[str], families: list[str], path: Path) -> None:
    """Scatter of the members, coloured by family. Labels of nearby members (twins that differ only in pre-training
    sit on one point) are listed in a column to the right of their group, each joined to its point by a line."""
    fig, ax = plt.subplots(figsize=(13, 9))
    colours = dict(zip(dict.fromkeys(families), plt.get_cmap("tab10").colors, strict=False))
    for fam, colour in colours.items():
        idx = [i for i, f in enumerate(families) if f == fam]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=90, color=colour, label=fam, edgecolor="black", linewidth=0.5)
    span_x, span_y = (coords.max(dim=0).values - coords.min(dim=0).values).tolist()
    step = 0.045 * span_y
    for group in clusters(coords, (0.25 * span_x, 0.06 * span_y)):
        group.sort(key=lambda i: (-coords[i, 1].item(), names[i]))
        x = coords[group, 0].max().item() + 0.04 * span_x
        top = coords[group, 1].mean().item() + step * (len(group) - 1) / 2
        for k, i in enumerate(group):
            ax.annotate(names[i], coords[i].tolist(), xytext=(x, top - k * step), fontsize=10, va="center",
                        color=colours[families[i]], arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)", fontsize=12)
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)", fontsize=12)
    ax.set_title("archi2vec of the v2 zoo: PCA of the slot-standardized vectors", fontsize=13)
    ax.legend(title="family", fontsize=10, loc="upper left")
    ax.margins(x=0.3, y=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=V2, help="zoo manifest (default: v2)")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "archi2vec.png", help="PNG to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    names, vectors = archi2vec.zoo_vectors(args.manifest)
    seconds = time.perf_counter() - start
    archs = [e.arch for e in zoo.load_manifest(args.manifest).models]
    families = [family(a) for a in archs]
    print(f"{len(names)} members x {vectors.shape[1]} slots in {seconds:.2f} s (manifest read included)")
    within, between = within_between(vectors, families)
    print(f"mean cosine similarity: within family {within:.3f}, between families {between:.3f}")
    for other_arch, label in ((False, "any other member"), (True, "members of another architecture")):
        hits = nearest_same_family(vectors, families, archs, other_arch)
        share = sum(hits) / len(hits)
        print(f"nearest neighbour of its own family, among {label}: {sum(hits)}/{len(hits)} = {share:.2f}")
    sims = cosine_matrix(vectors)
    sims.fill_diagonal_(-2)
    for i, name in enumerate(names):
        j = int(sims[i].argmax())
        print(f"  {name:30s} {families[i]:12s} nearest: {names[j]:30s} {families[j]:12s} cos {sims[i, j]:.3f}")
    coords, share = project_2d(vectors)
    plot(coords, share, names, families, args.plot)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
