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
from ranker.tasks.benchmark import Benchmark
from ranker.tasks.history import HistoryStore

pytestmark = pytest.mark.integration  # every test here starts subprocesses that train or build

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


def values(bench: Benchmark) -> dict[tuple, float]:
    build_history.merge_parts(bench)
    return {r.key: r.value for r in HistoryStore.load(bench.root / "history.csv").records()}


def check_kills(tmp_path: Path, kills: int) -> None:
    whole, killed = make_bench(tmp_path / "whole", MODELS), make_bench(tmp_path / "killed", MODELS)
    pairs = len(whole.config.tasks) * len(MODELS)
    uninterrupted = build(whole.root, tmp_path / "cache")  # on the other core (one thread each) meanwhile
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
    _, err = uninterrupted.communicate(timeout=900)
    assert uninterrupted.returncode == 0, err[-2000:]
    expected = values(whole)
    assert len(expected) == pairs and values(killed) == expected


def test_a_build_stopped_by_sigterm_says_so_and_fails(tmp_path: Path) -> None:
    """A cluster's time limit sends SIGTERM: the build must exit non-zero (a scheduler would record success on 0)
    with one line saying how far it got, and the rerun measures only the rest."""
    bench = make_bench(tmp_path / "bench", MODELS)
    proc = build(bench.root, tmp_path / "cache")
    while proc.poll() is None and measured(bench.root) < 1:
        time.sleep(0.02)
    time.sleep(0.5)  # inside the next pair's fine-tuning, where Lightning's own SIGTERM handler is installed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    before = measured(bench.root)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"build_history: stopped by SIGTERM after {before} of this run's"), last
    rerun = build(bench.root, tmp_path / "cache")
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-2000:]
    assert out.startswith(f"{len(bench.config.tasks) * len(MODELS) - before} measured"), out


def test_a_killed_history_build_ends_with_the_uninterrupted_records(tmp_path: Path) -> None:
    check_kills(tmp_path, kills=2)


@pytest.mark.slow
def test_ten_random_kills_of_the_history_build_lose_nothing(tmp_path: Path) -> None:
    start = time.perf_counter()
    check_kills(tmp_path, kills=10)
    print(f"10 kills of the history build: {time.perf_counter() - start:.0f} s")
