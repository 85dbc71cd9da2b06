"""Shared fixtures: tiny benchmarks of real zoo members and real data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ranker.tasks import benchmark as bm
from ranker.zoo import manifest as zoo


def help_output_and_heavy_imports(run: str) -> tuple[str, list[str]]:
    """Runs ``run`` (a ``runpy`` call of a command, with ``sys.argv`` set to ask for ``--help``) in a fresh
    interpreter; returns its output and which of torch, timm and FAISS it imported (a fast --help imports none)."""
    code = (f"import sys, runpy\ntry: {run}\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=zoo.REPO_ROOT, capture_output=True, text=True, check=True)
    *lines, loaded = out.stdout.splitlines()
    return "\n".join(lines), eval(loaded)


@pytest.fixture(scope="session", autouse=True)
def features_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One features cache (``$RANKER_CACHE``) for the whole run, never the user's: the demo's features, extracted by
    the first test that ranks it, serve the later ones. A test that needs a cache of its own sets its own."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("features")
        patch.setenv("RANKER_CACHE", str(path))
        yield path


def make_bench(root: Path, models: tuple[str, ...]) -> bm.Benchmark:
    """A benchmark of ``models`` (entries copied from the offline manifest) x two scikit-learn digits tasks."""
    manifest = OmegaConf.load(zoo.DEFAULT_MANIFEST)
    manifest.name = "tiny"
    manifest.models = [m for m in manifest.models if m.name in models]
    root.mkdir()
    OmegaConf.save(manifest, root / "zoo.yaml")
    (root / "benchmark.yaml").write_text(
        f"name: tiny\nmanifest: {root / 'zoo.yaml'}\ngeneral_encoder: {models[0]}\npool_per_class: 20\ntasks:\n"
        "  - {id: d3, role: train, dataset: digits, classes: [1, 2, 3], n_train: 5, n_test: 10}\n"
        "  - {id: d2-inv, role: test, dataset: digits, variant: invert, classes: [0, 8], n_train: 8, n_test: 12}\n"
    )
    return bm.load_benchmark(root)


@pytest.fixture
def tiny_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bm.Benchmark:
    """Two small self-pre-trained members (32 px, no classification head); features cached under tmp_path."""
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    return make_bench(tmp_path / "bench", ("tiny_resnet_fmnist", "tiny_convnext_amnist"))


@pytest.fixture
def headed_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bm.Benchmark:
    """Two ImageNet members that ship their 1000-class heads, so LEEP and NCE apply."""
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    return make_bench(tmp_path / "bench", ("mobilenetv2_100", "efficientnet_lite0"))
