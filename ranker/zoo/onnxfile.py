"""ONNX weight files: their tensors for timm architectures, or their graph run as a trainable PyTorch module.

Two ways in, by what the file holds:
- a network timm has (DINOv2 ViT-S/14, VGG16): :func:`read` returns the file's tensors (initializers and
  ``Constant`` outputs) in graph order, and a key map (:func:`map_hf_dinov2`, :func:`map_conv_trunk`) renames them
  onto the timm model, so the member is a plain timm network;
- a network timm lacks (PP-OCR's text detector): :func:`graph_module` cuts the graph at a feature node and converts
  it with ``onnx2torch``, a maintained converter whose modules are ordinary ``nn.Conv2d`` / ``nn.BatchNorm2d``
  layers, so fine-tuning trains them. Constants are lifted into initializers first (``onnx2torch`` reads
  convolution weights only from initializers).

Examples:
    >>> tensors = read(Path("vit_s_focus.onnx"))  # doctest: +SKIP
    >>> tensors["backbone.encoder.layer.0.mlp.fc1.weight"].shape  # doctest: +SKIP
    torch.Size([384, 1536])
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ranker.zoo.errors import ZooError


def _load(path: Path):
    """The ONNX model at ``path``, with every ``Constant`` node's tensor moved into the initializers."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ZooError(f"{path} is not an ONNX model ({type(err).__name__}: {err})") from None
    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = helper.get_attribute_value(node.attribute[0])
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def read(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors in order of first use by the graph, float ones as float32.

    Anonymous ``onnx::MatMul_*`` weights (what ``torch.onnx.export`` writes for linear layers) are named after the
    bias their output is added to (``….bias`` -> ``….weight``) and keep ONNX's ``[in, out]`` layout.
    """
    from onnx import numpy_helper

    graph = _load(path).graph
    arrays = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tensors: dict[str, torch.Tensor] = {}
    for node in graph.node:
        for name in node.input:
            if name not in arrays or name in tensors:
                continue
            key = name
            if node.op_type == "MatMul" and name.startswith("onnx::"):
                biases = [i for c in consumers.get(node.output[0], []) if c.op_type == "Add"
                          for i in c.input if i in arrays and i.endswith(".bias")]
                if len(biases) == 1:
                    key = biases[0].removesuffix("bias") + "weight"
            array = numpy_helper.to_array(arrays[name])
            tensor = torch.from_numpy(array.copy())
            tensors[key] = tensor.float() if tensor.is_floating_point() else tensor
    return tensors


def map_hf_dinov2(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2Model`` tensors under a ``backbone.`` prefix (as exported to ONNX) -> timm's ViT.

    The position embedding comes as two anonymous tensors, its class-token part ``[1, 1, D]`` and its patch part
    ``[1, P, D]``; q, k and v are concatenated into timm's ``qkv``; ``layer_scale{1,2}.lambda1`` are ``ls{1,2}.gamma``.
    """
    prefix = "backbone."
    named = {k.removeprefix(prefix): v for k, v in source.items() if k.startswith(prefix)}
    anonymous = [v for k, v in source.items() if k.startswith("onnx::") and v.dim() == 3 and v.shape[0] == 1]
    cls_part = [v for v in anonymous if v.shape[1] == 1]
    patch_part = [v for v in anonymous if v.shape[1] > 1 and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]]
    if len(cls_part) != 1 or len(patch_part) != 1:
        raise ZooError("the ONNX file holds no two-part DINOv2 position embedding ([1, 1, D] and [1, P, D])")
    out = {
        "cls_token": named["embeddings.cls_token"],
        "pos_embed": torch.cat([cls_part[0], patch_part[0]], dim=1),
        "patch_embed.proj.weight": named["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": named["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": named["layernorm.weight"],
        "norm.bias": named["layernorm.bias"],
    }
    blocks = sorted({int(m.group(1)) for k in named if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in blocks:
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        qkv = [f"{hf}attention.attention.{part}" for part in ("query", "key", "value")]
        out[tm + "attn.qkv.weight"] = torch.cat([named[q + ".weight"].T for q in qkv])
        out[tm + "attn.qkv.bias"] = torch.cat([named[q + ".bias"] for q in qkv])
        for hf_name, tm_name, transpose in (
            ("attention.output.dense", "attn.proj", True), ("mlp.fc1", "mlp.fc1", True),
            ("mlp.fc2", "mlp.fc2", True), ("norm1", "norm1", False), ("norm2", "norm2", False),
        ):  # fmt: skip
            weight = named[f"{hf}{hf_name}.weight"]
            out[f"{tm}{tm_name}.weight"] = weight.T if transpose else weight
            out[f"{tm}{tm_name}.bias"] = named[f"{hf}{hf_name}.bias"]
        out[tm + "ls1.gamma"] = named[hf + "layer_scale1.lambda1"]
        out[tm + "ls2.gamma"] = named[hf + "layer_scale2.lambda1"]
    missing = set(target) - set(out)
    if missing:
        raise ZooError(f"the DINOv2 tensors leave {sorted(missing)[:3]} of the timm model empty")
    return {k: out[k].contiguous() for k in target}


def map_conv_trunk(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain conv trunk's (weight ``[O, I, k, k]``, bias ``[O]``) pairs, in graph order, onto timm's in order.

    Dense-head tensors after the convolutions are ignored; the trunk's own count and shapes must match exactly.
    """
    convs = [k for k, v in source.items() if v.dim() == 4]
    pairs: list[torch.Tensor] = []
    keys = list(source)
    for key in convs:
        bias = keys[keys.index(key) + 1] if keys.index(key) + 1 < len(keys) else None
        if bias is None or source[bias].shape != source[key].shape[:1]:
            raise ZooError(f"convolution {key} of the ONNX file is not followed by its bias")
        pairs += [source[key], source[bias]]
    if len(pairs) != len(target):
        raise ZooError(f"the ONNX file holds {len(pairs) // 2} convolutions, the trunk has {len(target) // 2}")
    out = {}
    for (key, like), tensor in zip(target.items(), pairs, strict=True):
        if tensor.shape != like.shape:
            raise ZooError(f"ONNX tensor {tuple(tensor.shape)} does not fit {key} {tuple(like.shape)}")
        out[key] = tensor.contiguous()
    return out


class OnnxGraph(nn.Module):
    """An ONNX graph cut at a feature node: images ``[B, 3, H, W]`` -> features ``[B, D]`` (4-D nodes averaged)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.graph(images)
        return out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1)


def graph_module(path: Path, output: str) -> OnnxGraph:
    """The graph of ``path`` from its single image input to node output ``output``, converted by ``onnx2torch``."""
    import onnx
    from onnx2torch import convert

    model = onnx.shape_inference.infer_shapes(_load(path))
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ZooError(f"{path} has inputs {inputs}; a zoo graph member needs exactly one image input")
    known = {v.name for v in (*model.graph.value_info, *model.graph.output)}
    if output not in known:
        raise ZooError(f"{path} has no node output '{output}' (with a known shape)")
    cut = onnx.utils.Extractor(model).extract_model(inputs, [output])
    return OnnxGraph(convert(cut)).eval()
