"""The own-zoo guide end to end: docs/own-zoo.md's commands, run as written from a team's folder, on a tiny zoo of
three real members and five small folders of real Fashion-MNIST images, with half the fine-tuning results imported."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ranker.tasks import loaders
from ranker.zoo import manifest as zoo

pytestmark = pytest.mark.integration  # every test here starts subprocesses that train or build

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "own-zoo.md"
MODELS = ("tiny_resnet_fmnist", "tiny_convnext_amnist", "lcnet_050_fmnist")
FOLDERS = {"tops": (0, 2), "shoes": (5, 7), "bags": (8, 9), "trousers": (1, 3), "new": (4, 6)}
QUICK = {"ptm-train": ["trainer.max_epochs=4"]}  # appended: the guide's defaults, fewer epochs


def guide_commands() -> list[list[str]]:
    """The command lines of the guide's "The whole run" block, in order."""
    block = GUIDE.read_text().split("## The whole run", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.strip().splitlines()]


def team_folder(team: Path) -> None:
    """What a team brings: a manifest of its models, its labelled folders, results it already has."""
    manifest = OmegaConf.load(zoo.DEFAULT_MANIFEST)
    entries = [m for m in manifest.models if m.name in MODELS]
    for entry in entries:
        entry.weights_file = str(zoo.REPO_ROOT / entry.weights_file)  # absolute: the team's own files
        del entry["pretrain"], entry["install"]
    OmegaConf.save(OmegaConf.create({"name": "my_zoo", "models": entries}), team / "my_zoo.yaml")
    fashion = loaders.fashion_mnist("test")
    for folder, classes in FOLDERS.items():
        for c in classes:
            (team / "folders" / folder / fashion.class_names[c]).mkdir(parents=True)
            for i in np.flatnonzero(fashion.labels == c)[:12]:
                fashion.image(int(i)).save(team / "folders" / folder / fashion.class_names[c] / f"{i}.png")
    with open(team / "results.csv", "w", newline="") as f:  # two of the four tasks' results are already known
        writer = csv.writer(f)
        writer.writerow(["task", "model", "accuracy"])
        writer.writerows([task, model, 80.0 + 5 * j] for task in ("tops", "trousers") for j, model in enumerate(MODELS))


def run(args: list[str], team: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    program = [sys.executable] if args[0] == "python" else [str(bin_dir / args[0])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANKER_CACHE": str(team / "cache")}
    return subprocess.run([*program, *args[1:], *QUICK.get(args[0], [])], cwd=team, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_guide_ranks_a_teams_own_zoo_on_a_new_folder(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    team_folder(team)
    commands = guide_commands()
    assert [c[0] for c in commands] == ["python"] * 6 + ["ptm-train", "ptm-rank"]
    outputs = []
    for args in commands:
        result = run(args, team)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        outputs.append(result.stdout)
    assert outputs[3].startswith("6 imported") and outputs[4].startswith("6 measured")  # only what was missing
    assert re.search(r"^history: (\d+) tasks .* logme evidence on \1$", outputs[6], re.M), outputs[6][:500]
    assert "next: python rank.py --checkpoint" in outputs[6]
    history = (team / "mybench" / "history.csv").read_text()
    assert history.count("imported from results.csv") == 6 and history.count(",logme,") == 12
    assert (team / "checkpoints" / "mine" / "zoo.yaml").is_file()
    ranked = [line.split()[1] for line in outputs[-1].splitlines() if line.strip()[:1].isdigit()]
    assert sorted(ranked) == sorted(MODELS)
