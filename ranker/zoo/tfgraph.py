"""Frozen TensorFlow graphs (``GraphDef`` ``.pb``) read without TensorFlow or protobuf.

A frozen graph is one protobuf message: ``GraphDef.node`` (field 1) lists ``NodeDef``s, each with ``name`` (1),
``op`` (2), ``input`` (3) and ``attr`` (5, a map of ``AttrValue``). Weights are ``Const`` nodes whose ``value``
attribute holds a ``TensorProto``: ``dtype`` (1), ``tensor_shape`` (2, dims at field 2, size at field 1) and the
data either raw little-endian in ``tensor_content`` (4) or as ``float_val`` (5, packed or not; one value broadcast
to the whole shape). ``read`` walks the wire format directly (varints and length-delimited fields only) and
returns the float constants in PyTorch layouts.

``map_ssd_mobilenetv2`` places the ``FeatureExtractor/MobilenetV2/*`` trunk of TF's model-zoo SSD MobileNetV2
(COCO detection, ``ssd_mobilenet_v2_coco_2018_03_29``) into timm ``mobilenetv2_100(pad_type='same',
bn_eps=1e-3)``: every timm tensor filled with a matching shape, loaded strictly. Checked: on photos the timm trunk
equals the graph's own trunk (up to ``Conv_1/Relu6``) interpreted op by op from its nodes, wiring, strides and
SAME padding, to 4e-5 (tests/test_zoo_tfgraph.py; a colleague also matched OpenCV's run of the graph to 2e-6);
and each batch norm's COCO running means correlate with its input's per-channel means on photos (median Pearson
r 0.976 over the 52 BNs; 0.16 with four block pairs' convs swapped, 0.01 with channels shuffled). Inputs are RGB in
[0, 1] normalized with mean 0.5, std 0.5 (SSD's ``2/255 * x - 1``), at 300 px; the graph's BN epsilon is 1e-3.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

from ranker.zoo.errors import ZooError

DT_FLOAT = 1
SSD_TRUNK = "FeatureExtractor/MobilenetV2/"


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes | memoryview) -> list[tuple[int, int | memoryview]]:
    """A message's ``(field number, value)`` pairs in order: ints for varint/fixed fields, bytes otherwise."""
    buf = memoryview(buf)
    out: list[tuple[int, int | memoryview]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")
        out.append((number, value))
    if pos != len(buf):
        raise ValueError("truncated protobuf message")
    return out


def _tensor(proto: memoryview) -> torch.Tensor | None:
    """A float ``TensorProto`` as a tensor in TF layout; None for other dtypes."""
    parsed = fields(proto)
    if next((value for number, value in parsed if number == 1), 0) != DT_FLOAT:
        return None
    shape, content, values = [], None, []
    for number, value in parsed:
        if number == 2:
            shape = [next((s for n, s in fields(dim) if n == 1), 0) for n, dim in fields(value) if n == 2]
        elif number == 4:
            content = bytes(value)
        elif number == 5:  # float_val: packed bytes or one fixed32 per value
            if isinstance(value, int):
                values.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
            else:
                values.extend(np.frombuffer(value, dtype="<f4").tolist())
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None:
        array = np.frombuffer(content, dtype="<f4").copy()
    elif len(values) == count:
        array = np.array(values, dtype=np.float32)
    elif len(values) <= 1:  # one value (or none: zeros) fills the whole shape
        array = np.full(count, values[0] if values else 0.0, dtype=np.float32)
    else:
        raise ValueError(f"TensorProto holds {len(values)} floats for shape {shape}")
    return torch.from_numpy(array.reshape(shape))


def _torch_layout(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """TF kernels to PyTorch: conv HWIO -> OIHW, depthwise HWC1 -> [C, 1, H, W]; others unchanged."""
    if tensor.ndim != 4:
        return tensor
    if name.endswith("depthwise_weights"):
        return tensor.permute(2, 3, 0, 1).contiguous()
    return tensor.permute(3, 2, 0, 1).contiguous()


def read_graph(path: Path) -> list[dict]:
    """The graph's nodes in order: ``{"name", "op", "input", "attr"}`` with attr values as raw AttrValue bytes."""
    nodes = []
    for number, node in fields(Path(path).read_bytes()):
        if number != 1:
            continue
        info: dict = {"name": "", "op": "", "input": [], "attr": {}}
        for n, value in fields(node):
            if n == 1:
                info["name"] = bytes(value).decode()
            elif n == 2:
                info["op"] = bytes(value).decode()
            elif n == 3:
                info["input"].append(bytes(value).decode())
            elif n == 5:
                entry = dict(fields(value))
                info["attr"][bytes(entry[1]).decode()] = entry.get(2, b"")
        nodes.append(info)
    return nodes


def const_value(node: dict) -> torch.Tensor | None:
    """A ``read_graph`` node's float constant in TF layout (HWIO kernels); None unless a float Const."""
    if node["op"] != "Const" or "value" not in node["attr"]:
        return None
    proto = next((v for n, v in fields(node["attr"]["value"]) if n == 8), None)  # AttrValue.tensor
    return None if proto is None else _tensor(proto)


def read(path: Path) -> dict[str, torch.Tensor]:
    """Every float ``Const`` of a frozen GraphDef, named by node, in graph order, in PyTorch layouts."""
    out = {}
    try:
        for node in read_graph(path):
            tensor = const_value(node)
            if tensor is not None:
                out[node["name"]] = _torch_layout(tensor, node["name"])
    except (IndexError, KeyError, ValueError, UnicodeDecodeError) as err:
        raise ZooError(f"{path} is not a readable TensorFlow GraphDef ({type(err).__name__}: {err})") from None
    return out


_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_TOP = {"conv_stem": "Conv", "bn1": "Conv/BatchNorm", "conv_head": "Conv_1", "bn2": "Conv_1/BatchNorm"}
_FIRST_BLOCK = {"conv_dw": "depthwise", "bn1": "depthwise/BatchNorm", "conv_pw": "project", "bn2": "project/BatchNorm"}
_BLOCK = {
    "conv_pw": "expand",
    "bn1": "expand/BatchNorm",
    "conv_dw": "depthwise",
    "bn2": "depthwise/BatchNorm",
    "conv_pwl": "project",
    "bn3": "project/BatchNorm",
}
_FIRST_UNIT = [0, 1, 3, 6, 10, 13, 16]  # TF numbers the 17 inverted residuals across timm's 7 stages


def _ssd_name(key: str) -> str | None:
    """The TF node holding timm ``mobilenetv2_100`` tensor ``key`` in SSD MobileNetV2's trunk; None if none."""
    module, param = key.rsplit(".", 1)
    match = re.fullmatch(r"blocks\.(\d)\.(\d)\.(\w+)", module)
    if match is None:
        part = _TOP.get(module)
    else:
        stage, index, layer = int(match[1]), int(match[2]), match[3]
        number = _FIRST_UNIT[stage] + index
        unit = "expanded_conv" if number == 0 else f"expanded_conv_{number}"
        part = (_FIRST_BLOCK if stage == 0 else _BLOCK).get(layer)
        part = part and f"{unit}/{part}"
    if part is None:
        return None
    if part.endswith("BatchNorm"):
        return f"{SSD_TRUNK}{part}/{_BN[param]}" if param in _BN else None
    return f"{SSD_TRUNK}{part}/{'depthwise_weights' if part.endswith('depthwise') else 'weights'}"


def map_ssd_mobilenetv2(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SSD MobileNetV2 (COCO) ``FeatureExtractor/MobilenetV2/*`` constants -> timm ``mobilenetv2_100`` state."""
    mapped, missing = {}, []
    for key, like in target.items():
        if key.endswith("num_batches_tracked"):
            mapped[key] = torch.zeros_like(like)
            continue
        name = _ssd_name(key)
        tensor = None if name is None else source.get(name)
        if tensor is None or tensor.shape != like.shape:
            missing.append(f"{key} <- {name}" + ("" if tensor is None else f" {tuple(tensor.shape)}"))
        else:
            mapped[key] = tensor
    if missing:
        raise ZooError(
            f"SSD MobileNetV2 graph lacks {len(missing)} tensors of mobilenetv2_100 (missing or misshapen): "
            + "; ".join(missing[:5])
        )
    return mapped
