"""TensorFlow.js graph models (``model.json`` + ``.bin`` shards) run as trainable PyTorch modules.

No maintained Python library runs a TF.js graph without TensorFlow itself (the converter and its runtime are
JavaScript), so this module reads the JSON GraphDef and the weight shards (float32, float16 or uint8-quantized) and
rebuilds the graph from ``nn.Conv2d`` / ``nn.Linear`` / activation modules, one per node that the chosen feature
node depends on. Float constants that the graph multiplies or adds (folded batch norms, PReLU slopes) become
parameters, so fine-tuning trains them as it trains the convolutions.

Layout: TF.js graphs are NHWC; here every 4-D value is NCHW (the zoo's input layout), and the ops whose meaning
depends on the layout (axes, paddings, reshapes, broadcasting constants) are translated. An op outside
:data:`BUILDERS` raises a :class:`ZooError` naming it.

Examples:
    >>> graph = TfjsGraph.from_file(path, "global_pooling/Mean")  # doctest: +SKIP
    >>> graph(torch.zeros(2, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([2, 1024])
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

from ranker.zoo.errors import ZooError

QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
"""Storage dtypes of quantized weights (float16 is stored as is; the integer ones carry scale and min)."""


def read_weights(path: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(graph nodes, constant arrays by node name) of a TF.js graph model, weights dequantized to float32."""
    try:
        spec = json.loads(path.read_text())
        nodes = spec["modelTopology"]["node"]
        groups = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ZooError(f"{path} is not a TF.js graph model ({type(err).__name__}: {err})") from None
    arrays: dict[str, np.ndarray] = {}
    for group in groups:
        data = b"".join((path.parent / shard).read_bytes() for shard in group["paths"])
        offset = 0
        for weight in group["weights"]:
            count = math.prod(weight["shape"])
            quantization = weight.get("quantization")
            stored = np.dtype(QUANTIZED[quantization["dtype"]] if quantization else weight["dtype"])
            raw = np.frombuffer(data, stored, count, offset)
            offset += count * stored.itemsize
            if quantization and quantization["dtype"] != "float16":
                raw = raw.astype(np.float32) * quantization["scale"] + quantization["min"]
            arrays[weight["name"]] = raw.astype(np.float32 if quantization else stored).reshape(weight["shape"])
        if offset != len(data):
            raise ZooError(f"{path}: weight shards hold {len(data)} bytes, the manifest describes {offset}")
    return nodes, arrays


def _attr(node: dict, key: str, default=None):
    """A node attribute as a Python value: string, int, float, bool, list of ints or list of strings."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        return [int(i) for i in items.get("i", [])]
    return default


TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
"""An NHWC axis -> the same axis of the NCHW tensor that holds it."""


def to_tf(x: torch.Tensor) -> torch.Tensor:
    """A value in TensorFlow's layout (NCHW 4-D tensors back to NHWC; others as they are)."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def from_tf(x: torch.Tensor) -> torch.Tensor:
    """A TensorFlow-layout value in this module's layout (NHWC 4-D tensors to NCHW)."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def broadcastable(constant: torch.Tensor, rank: int) -> torch.Tensor:
    """A TF-layout constant shaped to broadcast against a value of ``rank`` in this module's layout."""
    if rank != 4:
        return constant
    return constant.reshape([1] * (4 - constant.dim()) + list(constant.shape)).permute(0, 3, 1, 2)


BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "RealDiv": torch.div, "Maximum": torch.maximum, "Minimum": torch.minimum,
    "SquaredDifference": lambda a, b: (a - b).square(),
}  # fmt: skip

UNARY: dict[str, Callable[[], nn.Module]] = {
    "Relu": nn.ReLU, "Relu6": nn.ReLU6, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "Elu": nn.ELU, "Identity": nn.Identity,
}  # fmt: skip


class Elementwise(nn.Module):
    """``fn(x)`` for an elementwise function without weights (Abs, Square, Sqrt, Rsqrt)."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


ELEMENTWISE = {"Abs": torch.abs, "Square": torch.square, "Sqrt": torch.sqrt, "Rsqrt": torch.rsqrt}


class WithConstant(nn.Module):
    """A binary op between a value and one of the graph's constants (a parameter unless it is a scalar)."""

    def __init__(self, op: str, constant: torch.Tensor, constant_first: bool) -> None:
        super().__init__()
        self.op, self.constant_first = op, constant_first
        if constant.dim() and constant.dtype.is_floating_point:
            self.constant = nn.Parameter(constant)
        else:
            self.register_buffer("constant", constant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = broadcastable(self.constant, x.dim())
        return BINARY[self.op](c, x) if self.constant_first else BINARY[self.op](x, c)

    def extra_repr(self) -> str:
        return f"{self.op}, constant {tuple(self.constant.shape)}"


class Between(nn.Module):
    """A binary op (or AddN) between values of equal rank."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.op == "AddN":
            return torch.stack(torch.broadcast_tensors(*xs)).sum(0)
        return BINARY[self.op](*xs)

    def extra_repr(self) -> str:
        return self.op


class PReLU(nn.Module):
    """TensorFlow's PReLU: ``relu(x) - alpha * relu(-x)`` with a per-channel (or per-position) slope."""

    def __init__(self, alpha: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) - broadcastable(self.weight, x.dim()) * F.relu(-x)


class Reduce(nn.Module):
    """Mean or Sum over TF axes; with ``keep_dims`` the result stays 4-D (NCHW), else it drops to TF's layout."""

    def __init__(self, op: str, axes: list[int], keep_dims: bool) -> None:
        super().__init__()
        self.op, self.axes, self.keep_dims = op, axes, keep_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = torch.mean if self.op == "Mean" else torch.sum
        axes = [a % x.dim() for a in self.axes]
        if self.keep_dims and x.dim() == 4:
            return fn(x, dim=[TO_NCHW_AXIS[a] for a in axes], keepdim=True)
        return fn(to_tf(x), dim=axes, keepdim=self.keep_dims)

    def extra_repr(self) -> str:
        return f"{self.op}, axes {self.axes}, keep_dims {self.keep_dims}"


class InTfLayout(nn.Module):
    """A layout-dependent op (Reshape, Squeeze, ExpandDims) applied in TF's layout, the result brought back."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_tf(self.fn(to_tf(x)))

    def extra_repr(self) -> str:
        return self.name


class Concat(nn.Module):
    """ConcatV2 along a TF axis."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        axis = self.axis % xs[0].dim()
        return torch.cat(xs, dim=TO_NCHW_AXIS[axis] if xs[0].dim() == 4 else axis)


class Pad(nn.Module):
    """Pad / PadV2 with TF's ``[[before, after]] * 4`` NHWC paddings."""

    def __init__(self, paddings: list[list[int]], value: float) -> None:
        super().__init__()
        (n0, n1), (h0, h1), (w0, w1), (c0, c1) = paddings
        self.pad, self.value = (w0, w1, h0, h1, c0, c1, n0, n1), value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad, value=self.value)


def _legacy_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1's default bilinear resize (no align_corners, no half-pixel centres): output pixel i samples input
    ``i * in / out``, which no ``F.interpolate`` mode reproduces."""
    out = x
    for dim, (side, new) in ((2, (x.shape[2], size[0])), (3, (x.shape[3], size[1]))):
        src = torch.arange(new, device=x.device, dtype=x.dtype) * (side / new)
        low = src.floor().long().clamp(max=side - 1)
        high = (low + 1).clamp(max=side - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = new
        weight = (src - low).reshape(shape)
        a, b = out.index_select(dim, low), out.index_select(dim, high)
        out = a + (b - a) * weight
    return out


class Resize(nn.Module):
    """ResizeBilinear / ResizeNearestNeighbor to a fixed size, with TF's corner conventions."""

    def __init__(self, op: str, size: list[int], align_corners: bool, half_pixel_centers: bool) -> None:
        super().__init__()
        self.size = tuple(size)
        self.legacy = op == "ResizeBilinear" and not (align_corners or half_pixel_centers)
        if op == "ResizeBilinear":
            self.mode, self.align_corners = "bilinear", align_corners
        else:
            if align_corners:
                raise ZooError("ResizeNearestNeighbor with align_corners is not supported")
            self.mode, self.align_corners = ("nearest-exact" if half_pixel_centers else "nearest"), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            return _legacy_bilinear(x, self.size)
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=self.align_corners)


FUSED_ACTIVATIONS = {"Relu": nn.ReLU, "Relu6": nn.ReLU6, "Elu": nn.ELU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}


def _conv(node: dict, weight: np.ndarray, bias: np.ndarray | None, depthwise: bool) -> nn.Conv2d:
    """An ``nn.Conv2d`` equal to a TF Conv2D / DepthwiseConv2dNative node (``Conv2dSame`` where TF pads unevenly)."""
    kh, kw, cin, cout = weight.shape
    strides, dilations = _attr(node, "strides", [1, 1, 1, 1]), _attr(node, "dilations", [1, 1, 1, 1])
    if _attr(node, "data_format", "NHWC") != "NHWC" or strides[0] != 1 or dilations[0] != 1:
        raise ZooError(f"node {node['name']}: only NHWC convolutions over space are supported")
    stride, dilation = tuple(strides[1:3]), tuple(dilations[1:3])
    groups, out_channels = (cin, cin * cout) if depthwise else (1, cout)
    padding = _attr(node, "padding")
    kwargs = dict(stride=stride, dilation=dilation, groups=groups, bias=bias is not None)
    if padding == "VALID":
        conv = nn.Conv2d(cin, out_channels, (kh, kw), padding=0, **kwargs)
    elif padding == "SAME" and stride == (1, 1) and kh % 2 and kw % 2:  # even padding: a static, faster conv
        conv = nn.Conv2d(cin, out_channels, (kh, kw), padding=((kh - 1) // 2 * dilation[0],
                                                               (kw - 1) // 2 * dilation[1]), **kwargs)
    elif padding == "SAME":
        conv = Conv2dSame(cin, out_channels, (kh, kw), **kwargs)
    else:
        raise ZooError(f"node {node['name']}: padding {padding} is not supported")
    w = torch.from_numpy(weight.copy())
    # TF kernels are [kh, kw, in, out] (depthwise: [kh, kw, in, multiplier], output channel = in * mult + m)
    conv.weight.data = w.permute(2, 3, 0, 1).reshape(out_channels, 1, kh, kw) if depthwise else w.permute(3, 2, 0, 1)
    if bias is not None:
        conv.bias.data = torch.from_numpy(bias.copy())
    return conv


def _value_ref(node: str, ref: str) -> str:
    """The producing node of input ``ref`` (``name`` or ``name:0``); other outputs of multi-output ops are refused."""
    name, _, index = ref.partition(":")
    if index not in ("", "0"):
        raise ZooError(f"node {node}: input {ref} is output {index} of a multi-output op, which is not supported")
    return name


@dataclass
class Node:
    """A graph node being built: its JSON, the graph's nodes by name and the constant arrays."""

    spec: dict
    by_name: dict[str, dict]
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def op(self) -> str:
        return self.spec["op"]

    def attr(self, key: str, default=None):
        return _attr(self.spec, key, default)

    @functools.cached_property
    def refs(self) -> list[str]:
        """Data inputs (control inputs ``^name`` left out)."""
        return [r for r in self.spec.get("input", []) if not r.startswith("^")]

    @functools.cached_property
    def is_const(self) -> list[bool]:
        return [self.by_name[r.split(":")[0]]["op"] == "Const" for r in self.refs]

    @functools.cached_property
    def values(self) -> list[str]:
        """Producing nodes of the inputs that are computed values (not constants), in input order."""
        return [_value_ref(self.name, r) for r, c in zip(self.refs, self.is_const, strict=True) if not c]

    def const(self, i: int) -> np.ndarray:
        """Input ``i``, which must be a constant, as its array."""
        ref = self.refs[i].split(":")[0]
        if ref not in self.arrays:
            raise ZooError(f"node {self.name}: constant {ref} has no weights in the manifest")
        return self.arrays[ref]

    def tensor(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.const(i).copy())


Built = tuple[nn.Module, list[str]]
"""What a builder returns: the module computing a node, and the values it reads."""


def _convolution(node: Node) -> Built:
    fused = node.attr("fused_ops", []) if node.op.startswith(("_Fused", "Fused")) else []
    if fused and fused[0] != "BiasAdd" or len(fused) > 2:
        raise ZooError(f"node {node.name}: fused ops {fused} are not supported")
    conv = _conv(node.spec, node.const(1), node.const(2) if fused else None, depthwise="Depthwise" in node.op)
    if len(fused) < 2:
        return conv, node.values[:1]
    act = fused[1]
    if act == "Prelu":
        return nn.Sequential(conv, PReLU(node.tensor(3))), node.values[:1]
    if act == "LeakyRelu":
        return nn.Sequential(conv, nn.LeakyReLU(node.attr("leakyrelu_alpha", 0.2))), node.values[:1]
    if act not in FUSED_ACTIVATIONS:
        raise ZooError(f"node {node.name}: fused activation {act} is not supported")
    return nn.Sequential(conv, FUSED_ACTIVATIONS[act]()), node.values[:1]


def _matmul(node: Node) -> Built:
    if node.attr("transpose_a", False):
        raise ZooError(f"node {node.name}: MatMul with transpose_a is not supported")
    weight = node.const(1) if node.attr("transpose_b", False) else node.const(1).T
    fused = node.attr("fused_ops", []) if node.op == "_FusedMatMul" else []
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bool(fused))
    linear.weight.data = torch.from_numpy(weight.copy())
    if fused:
        linear.bias.data = node.tensor(2)
    if len(fused) > 1:
        return nn.Sequential(linear, FUSED_ACTIVATIONS[fused[1]]()), node.values[:1]
    return linear, node.values[:1]


def _binary(node: Node) -> Built:
    if node.op == "AddN" or not any(node.is_const):
        return Between(node.op), node.values
    if all(node.is_const) or len(node.refs) != 2:
        raise ZooError(f"node {node.name}: {node.op} of {len(node.refs)} constants is not supported")
    index = node.is_const.index(True)
    return WithConstant(node.op, node.tensor(index), constant_first=index == 0), node.values


def _pool(node: Node) -> Built:
    if node.attr("data_format", "NHWC") != "NHWC":
        raise ZooError(f"node {node.name}: only NHWC pooling is supported")
    kernel, stride = tuple(node.attr("ksize")[1:3]), tuple(node.attr("strides")[1:3])
    padding = node.attr("padding")
    if padding == "VALID":
        return (nn.MaxPool2d(kernel, stride) if node.op == "MaxPool" else nn.AvgPool2d(kernel, stride)), node.values
    if padding == "SAME" and node.op == "MaxPool":
        return MaxPool2dSame(kernel, stride), node.values
    raise ZooError(f"node {node.name}: {node.op} with {padding} padding is not supported")


def _reshape(node: Node) -> Built:
    shape = node.const(1).tolist()
    return InTfLayout(f"Reshape {shape}", lambda x: x.reshape(shape)), node.values[:1]


def _squeeze(node: Node) -> Built:
    dims = node.attr("squeeze_dims", [])
    return InTfLayout(f"Squeeze {dims}", lambda x: x.squeeze(tuple(dims)) if dims else x.squeeze()), node.values


BUILDERS: dict[str, Callable[[Node], Built]] = {
    **dict.fromkeys(("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative"), _convolution),
    **dict.fromkeys(("MatMul", "_FusedMatMul"), _matmul),
    **dict.fromkeys((*BINARY, "AddN"), _binary),
    **{op: (lambda node, make=make: (make(), node.values)) for op, make in UNARY.items()},
    **{op: (lambda node, fn=fn: (Elementwise(node.op, fn), node.values)) for op, fn in ELEMENTWISE.items()},
    "LeakyRelu": lambda node: (nn.LeakyReLU(node.attr("alpha", 0.2)), node.values),
    "Prelu": lambda node: (PReLU(node.tensor(1)), node.values),
    **dict.fromkeys(("Mean", "Sum"), lambda node: (
        Reduce(node.op, np.atleast_1d(node.const(1)).tolist(), node.attr("keep_dims", False)), node.values)),
    "ConcatV2": lambda node: (Concat(int(node.const(len(node.refs) - 1))), node.values),
    **dict.fromkeys(("Pad", "PadV2"), lambda node: (
        Pad(node.const(1).tolist(), float(node.const(2)) if node.op == "PadV2" else 0.0), node.values)),
    **dict.fromkeys(("MaxPool", "AvgPool"), _pool),
    **dict.fromkeys(("ResizeBilinear", "ResizeNearestNeighbor"), lambda node: (
        Resize(node.op, node.const(1).tolist(), node.attr("align_corners", False),
               node.attr("half_pixel_centers", False)), node.values[:1])),
    "Reshape": _reshape,
    "Squeeze": _squeeze,
}  # fmt: skip
"""TF op -> builder of the module that computes it; an op not here is refused by name."""


def _build(node: Node) -> Built:
    """(module computing ``node``, names of the values it reads): constants are folded into the module."""
    if node.op not in BUILDERS:
        raise ZooError(f"node {node.name}: TF.js op {node.op} is not supported by ranker.zoo.tfjs")
    return BUILDERS[node.op](node)


class TfjsGraph(nn.Module):
    """The part of a TF.js graph that a feature node depends on: images ``[B, 3, H, W]`` -> features ``[B, D]``.

    A 4-D feature node is averaged over space. Args: ``nodes`` and ``arrays`` as :func:`read_weights` returns them,
    ``output`` the feature node's name.
    """

    def __init__(self, nodes: list[dict], arrays: dict[str, np.ndarray], output: str) -> None:
        super().__init__()
        by_name = {n["name"]: n for n in nodes}
        if output not in by_name:
            raise ZooError(f"the graph has no node '{output}'; its nodes include {list(by_name)[-5:]}")
        self.steps = nn.ModuleDict()
        self.plan: list[tuple[str, str, list[str]]] = []  # (value name, module key, value inputs)
        self.input_name: str | None = None
        self.output = output
        keys: set[str] = set()
        for name in self._order(by_name, output):
            node = by_name[name]
            if node["op"] == "Const":
                continue
            if node["op"] == "Placeholder":
                if self.input_name is not None:
                    raise ZooError(f"feature node '{output}' depends on two inputs")
                self.input_name = name
                continue
            module, inputs = _build(Node(node, by_name, arrays))
            key = re.sub(r"\W", "_", name)
            while key in keys:
                key += "_"
            keys.add(key)
            self.steps[key] = module
            self.plan.append((name, key, inputs))
        if self.input_name is None:
            raise ZooError(f"feature node '{output}' does not depend on the graph's input")

    @classmethod
    def from_file(cls, path: Path, output: str) -> TfjsGraph:
        """The graph of ``model.json`` at ``path`` up to node ``output``."""
        nodes, arrays = read_weights(path)
        return cls(nodes, arrays, output)

    @staticmethod
    def _order(by_name: dict[str, dict], output: str) -> list[str]:
        """Node names the output depends on, each after its inputs (iterative depth-first search)."""
        order, done, stack = [], set(), [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(name)
                continue
            stack.append((name, True))
            for ref in by_name[name].get("input", []):
                if not ref.startswith("^"):
                    stack.append((ref.split(":")[0], False))
        return order

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The output node's value as the graph computes it (4-D values NCHW), not pooled."""
        values = {self.input_name: images}
        for name, key, inputs in self.plan:
            values[name] = self.steps[key](*(values[ref] for ref in inputs))
        return values[self.output]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.run(images)
        return out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1)
