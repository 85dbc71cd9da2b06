"""Kill tests of the history builder: a fine-tuning build SIGKILLed at random points and rerun ends with the records
an uninterrupted build writes, none lost, none twice (each record is an atomic rewrite of the run's part file)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_bench

from data import build_history
from ranker.tasks.history import HistoryStore

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("tiny_resnet_fmnist", "tiny_convnext_amnist", "tiny_efficientnet_amnist")


def build(root: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "RANKER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "data.build_history", "--benchmark", str(root), "--kind",
                             "finetune"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def measured(root: Path) -> int:
    part = build_history.part_path(root, "finetune", (0, 1))
    return len(HistoryStore.load(part)) if part.exists() else 0


def values(root: Path) -> dict[tuple, float]:
    build_history.merge_parts(root)
    return {r.key: r.value for r in HistoryStore.load(root / "history.csv").records()}


def check_kills(tmp_path: Path, kills: int) -> None:
    whole, killed = make_bench(tmp_path / "whole", MODELS), make_bench(tmp_path / "killed", MODELS)
    pairs = len(whole.config.tasks) * len(MODELS)
    proc = build(whole.root, tmp_path / "cache")
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    rng = random.Random(kills)
    for target in sorted(rng.choices(range(pairs), k=kills)):  # kill while the pair after `target` is measured
        proc = build(killed.root, tmp_path / "cache")
        while proc.poll() is None and measured(killed.root) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 1.5))  # somewhere inside the next pair's fine-tuning (or its start-up)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = measured(killed.root)
    proc = build(killed.root, tmp_path / "cache")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert out.startswith(f"{pairs - before} measured"), out  # the rerun measured only what the killed runs had not
    expected = values(whole.root)
    assert len(expected) == pairs and values(killed.root) == expected


def test_a_killed_history_build_ends_with_the_uninterrupted_records(tmp_path: Path) -> None:
    check_kills(tmp_path, kills=2)


@pytest.mark.slow
def test_ten_random_kills_of_the_history_build_lose_nothing(tmp_path: Path) -> None:
    start = time.perf_counter()
    check_kills(tmp_path, kills=10)
    print(f"10 kills of the history build: {time.perf_counter() - start:.0f} s")
