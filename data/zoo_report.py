"""The zoo report: how well each member's frozen features separate real datasets, and what a feature costs.

For every member of a manifest (default: zoo v3) and each of six real datasets, the leave-one-out nearest-neighbour
accuracy (cosine) of its frozen features, and the seconds per image of a feature on this machine's CPU at the
member's own input size. The first sign that the task picks the model: which member wins where.

Writes ``ranker/configs/zoo/README.md`` (the table), ``ranker/configs/zoo/v3_report.json`` (the figures) and
``ranker/configs/zoo/v3_report.png`` (a heatmap). Features are cached (``ranker.tasks.features``), so a rerun after
a change of the report only is quick: the first run took about 45 minutes on 2 busy cores, a rerun 81 s.

    python -m data.zoo_report [--manifest ranker/configs/zoo/v3.yaml]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ranker.tasks import features, loaders
from ranker.tasks.datasets import Task
from ranker.zoo import manifest as zoo

OUT = zoo.REPO_ROOT / "ranker" / "configs" / "zoo"


@dataclass(frozen=True)
class Probe:
    """One dataset of the report: a loader, the classes taken from it (None: all) and at most ``per_class`` each."""

    name: str
    loader: str
    classes: tuple[str, ...] | None
    per_class: int
    what: str


PROBES = (
    Probe("Tux Paint photos", "tuxpaint",
          ("animals/birds", "animals/fish", "animals/insects", "animals/mammals", "food/fruit", "food/vegetables",
           "plants/flowers", "town/houses", "vehicles"), 40, "colour photo cut-outs, 9 classes"),
    Probe("OpenMoji", "openmoji",
          ("animal-mammal", "animal-bird", "animal-marine", "animal-bug", "plant-flower", "food-fruit",
           "food-vegetable", "food-sweet", "transport-ground", "clothing"), 30, "colour emoji, 10 subgroups"),
    Probe("Open Clip Art", "openclipart",
          ("animals/birds", "animals/bugs", "animals/mammals", "buildings/homes", "food/desserts", "food/fruit",
           "plants/flowers", "recreation/music", "transportation/vehicles", "people/smilies"), 20,
          "colour clip art, 10 classes x 20"),
    Probe("LFW faces", "lfw_subset", None, 100, "25-px grey faces vs non-faces"),
    Probe("Fashion-MNIST", "fashion_mnist", None, 30, "28-px grey clothes, 10 classes x 30"),
    Probe("digits", "digits", None, 30, "8-px grey handwritten digits, 10 classes x 30"),
)  # fmt: skip


def subset(task: Task, classes: tuple[str, ...] | None, per_class: int, seed: int = 0) -> Task:
    """``task`` restricted to ``classes`` (all when None), at most ``per_class`` images each, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked = [np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
              for idx in (np.flatnonzero(task.labels == task.class_names.index(name))
                          for name in classes or task.class_names)]
    return task.subset(np.concatenate(picked), f"zoo-report-{len(picked)}x{per_class}s{seed}")


def loo_1nn(feats: torch.Tensor, labels: np.ndarray) -> float:
    """Leave-one-out nearest-neighbour accuracy (cosine) of features ``[N, D]``, in percent."""
    f = torch.nn.functional.normalize(feats.double(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-torch.inf)
    return 100.0 * float((labels[sim.argmax(1).numpy()] == labels).mean())


def seconds_per_image(extractor: zoo.FrozenExtractor, batch: int = 8, repeats: int = 3) -> float:
    """Median seconds per image of a forward pass at the member's input size, batches of ``batch``, after a warm-up."""
    x = torch.rand(batch, 3, extractor.entry.input_size, extractor.entry.input_size)
    extractor(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        extractor(x)
        times.append((time.perf_counter() - start) / batch)
    return float(np.median(times))


def measure(manifest: Path) -> dict:
    """Every member's accuracies, cost and facts: the report's JSON."""
    tasks = [subset(loaders.load_dataset(p.loader), p.classes, p.per_class) for p in PROBES]
    members = []
    for entry in zoo.load_manifest(manifest).models:
        extractor = zoo.load_extractor(entry)
        accuracy = {p.name: round(loo_1nn(features.extract(extractor, t), t.labels), 1)
                    for p, t in zip(PROBES, tasks, strict=True)}
        members.append({
            "name": entry.name, "domain": entry.domain, "input_size": entry.input_size,
            "params_m": round(zoo.parameter_count(entry) / 1e6, 2), "feature_dim": entry.feature_dim,
            "seconds_per_image": round(seconds_per_image(extractor), 4), "accuracy": accuracy,
        })
        print(f"{entry.name:26s} " + " ".join(f"{a:5.1f}" for a in accuracy.values()), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=zoo.REPO_ROOT)
    return {
        "manifest": str(manifest.relative_to(zoo.REPO_ROOT)), "date": date.today().isoformat(),
        "commit": commit.stdout.strip(), "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
        "datasets": {p.name: {"images": len(t), "classes": t.num_classes, "what": p.what}
                     for p, t in zip(PROBES, tasks, strict=True)},
        "members": members,
    }


def winners(report: dict) -> dict[str, list[str]]:
    """Dataset -> the members with the best accuracy on it (several when tied), in manifest order."""
    best = {d: max(m["accuracy"][d] for m in report["members"]) for d in report["datasets"]}
    return {d: [m["name"] for m in report["members"] if m["accuracy"][d] == top] for d, top in best.items()}


def markdown(report: dict) -> str:
    """The zoo README: members, the accuracy table (best per dataset in bold), costs and winners."""
    names = list(report["datasets"])
    best = winners(report)
    sole = {w[0] for w in best.values() if len(w) == 1}
    lines = [
        "# The zoos",
        "",
        "Generated by `python -m data.zoo_report` (do not edit by hand): "
        f"{report['date']}, commit {report['commit']}, {report['machine']}, manifest `{report['manifest']}`.",
        "",
        "Leave-one-out nearest-neighbour accuracy (%, cosine) of each member's frozen features, at its own input "
        "size and normalization, and the seconds one image's feature takes on this CPU (batches of 8).",
        "",
        "| member | domain | params | input | s / image | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for m in report["members"]:
        cells = [f"**{m['accuracy'][d]:.1f}**" if m["name"] in best[d] else f"{m['accuracy'][d]:.1f}" for d in names]
        lines.append(f"| {m['name']} | {m['domain']} | {m['params_m']:.2f}M | {m['input_size']} | "
                     f"{m['seconds_per_image']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Datasets: " + "; ".join(f"{d}: {v['what']} ({v['images']} images)"
                                          for d, v in report["datasets"].items()) + ".", ""]
    lines += ["Best per dataset: " + "; ".join(f"{d}: {', '.join(w)}" + (" (tied)" if len(w) > 1 else "")
                                               for d, w in best.items())
              + f". {len(sole)} different members are alone in first place somewhere.", ""]
    lines += ["![accuracy heatmap](v3_report.png)", ""]
    return "\n".join(lines)


def heatmap(report: dict, path: Path) -> None:
    """Members x datasets accuracy, each column scaled to its own range so that the winner of each stands out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["datasets"])
    acc = np.array([[m["accuracy"][d] for d in names] for m in report["members"]])
    span = acc.max(0) - acc.min(0)
    scaled = (acc - acc.min(0)) / np.where(span > 0, span, 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 3, 0.4 * len(acc) + 1.5))
    ax.imshow(scaled, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(acc):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if scaled[i, j] < 0.6 else "black",
                fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yticks(range(len(acc)), [f"{m['name']} ({m['domain']})" for m in report["members"]])
    ax.set_title("leave-one-out 1-NN accuracy (%) of frozen features; colour scaled per dataset")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=OUT / "v3.yaml")
    args = parser.parse_args(argv)
    report = measure(args.manifest.resolve())
    (OUT / "v3_report.json").write_text(json.dumps(report, indent=1) + "\n")
    heatmap(report, OUT / "v3_report.png")
    (OUT / "README.md").write_text(markdown(report))
    print(f"wrote {OUT / 'README.md'}, v3_report.json and v3_report.png")


if __name__ == "__main__":
    main()
