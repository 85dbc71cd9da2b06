"""archi2vec (after Fennec, arXiv 2403.06382): a zoo member's architecture and pre-training as one fixed vector.

The vector is read from the network itself, built on the ``meta`` device exactly as the zoo builds it
(``timm.create_model(entry.arch, num_classes=0, **entry.arch_kwargs)``, VGG trunks cut to
``features[:trunk_layers]``), and from its manifest entry. No weights are read and no memory is filled, so a
user's new model gets its vector the same way from a :class:`ZooEntry` naming no weights. One forward pass of a
meta tensor at the entry's input size gives every layer's output shape (through forward hooks), from which
multiply-accumulates and downsampling are computed: nothing is timed, sampled or initialized at random, so the
same entry always gives the same vector.

Every slot lies roughly in [0, 1] so that none dominates a cosine or Euclidean comparison: kinds of layers are
fractions, counts spanning orders of magnitude are affine maps of their logarithm (not clipped: a model outside
the range gets a slot a little outside [0, 1]), pre-training is multi-hot at :data:`PRETRAINING_WEIGHT`.
"Weighted layers" are the ``nn.Conv2d`` (``Conv2dSame`` included) and ``nn.Linear`` modules.

=====================  ==========================================================================================
slot                   meaning
=====================  ==========================================================================================
conv_k1                1x1 convolutions / weighted layers
conv_k3                other convolutions with kernel side <= 3 (patchify ones excepted) / weighted layers
conv_k5                convolutions with kernel side 4-5 / weighted layers
conv_k7                convolutions with kernel side >= 6 / weighted layers
conv_patchify          non-overlapping strided convolutions (kernel == stride >= 2: ViT patch embedding,
                       ConvNeXt stem and downsampling) / weighted layers
linear                 linear layers / weighted layers (the six slots above sum to 1)
conv_depthwise         depthwise convolutions (groups == input channels > 1) / convolutions
conv_grouped           grouped, not depthwise, convolutions / convolutions
attention              weighted layers inside an attention module (class name containing "Attention") /
                       weighted layers
gates                  sigmoid and hard-sigmoid activations (squeeze-excitation gates) / weighted layers
norm_bn                batch norms / weighted layers
norm_ln                layer norms (LayerNorm2d included) / weighted layers
norm_gn                group norms / weighted layers
norm_none              1 when the model has none of the three norms above (RMS and instance norms are not seen)
act_relu               ReLU / activations (gates excluded), and likewise for
act_relu6, act_silu,   ReLU6; SiLU (Swish); GELU (tanh and quick variants included); Hardswish; the rest of
act_gelu,              ACTIVATIONS (LeakyReLU, PReLU, ELU, Mish, Tanh). An activation class absent from
act_hardswish,         ACTIVATIONS is not counted.
act_other
depth                  log2(weighted layers) / 9 (512 layers -> 1)
params                 (log10(parameters) - 4) / 5 (10k -> 0, 1G -> 1); counted as manifest.parameter_count does
width_mean             mean over weighted layers of log2(output channels) / 12 (4096 -> 1)
width_max              log2(widest weighted layer's output channels) / 12
feature_dim            log2(manifest feature_dim) / 12
downsamplings          round(log2(input side / smallest output side of a strided conv or pool)) / 6: how many
                       halvings the feature map goes through (5 for ImageNet CNNs, 4 for ViT/16); merging
                       patches by reshaping (Swin) is not seen
pool_avg               1 when the features are globally average-pooled (timm's 'avg' / 'fastavg'; VGG trunks,
                       which the extractor averages; graph members, which average a 4-D feature node)
pool_token             1 when the features are a class token (timm ViT's global_pool='token')
input_size             (log2(manifest input_size) - 4) / 6 (16 px -> 0, 1024 px -> 1)
macs                   (log10(multiply-accumulates of one image at input_size) - 5) / 6 (1e5 -> 0, 1e11 -> 1):
                       convolutions and linear layers from their output shapes, plus the two token-mixing matmuls
                       (2 N^2 C) of each attention module fed [B, N, C] tokens; norms, activations, pools and
                       additions are not counted
pre_imagenet           0.5 when the pre-training (manifest ``pretraining`` text and ``pretrain.source``) matches
pre_coco, pre_text,    PRETRAINING's pattern: ImageNet; COCO / object detection; scene text (OCR, CRAFT);
pre_edges,             edge detection; Fashion-MNIST; Animal-MNIST; dog breeds; else 0. Several can be set (ImageNet,
pre_fashion_mnist,     then text detection).
pre_animal_mnist,
pre_dogs
pre_other              0.5 when no PRETRAINING pattern matches
=====================  ==========================================================================================

Examples:
    >>> from ranker.zoo import archi2vec, manifest as zoo
    >>> vector = archi2vec.archi2vec(zoo.get_entry("mobilenetv2_100"))
    >>> vector.shape == (len(archi2vec.FEATURES),)
    True
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn

from ranker.zoo.manifest import DEFAULT_MANIFEST, GRAPHS, ZooEntry, load_manifest, meta_model

STRUCTURE_FEATURES: tuple[str, ...] = (
    "conv_k1", "conv_k3", "conv_k5", "conv_k7", "conv_patchify", "linear",
    "conv_depthwise", "conv_grouped", "attention", "gates",
    "norm_bn", "norm_ln", "norm_gn", "norm_none",
    "act_relu", "act_relu6", "act_silu", "act_gelu", "act_hardswish", "act_other",
    "depth", "params", "width_mean", "width_max", "feature_dim", "downsamplings", "pool_avg", "pool_token",
)  # fmt: skip
"""Slots that depend on the architecture only: equal for one architecture under any pre-training or input size."""

INPUT_FEATURES: tuple[str, ...] = ("input_size", "macs")
"""Slots that depend on the input size the member is fed."""

PRETRAINING: dict[str, str] = {
    "pre_imagenet": r"imagenet",
    "pre_coco": r"\bcoco\b|object detection",
    "pre_text": r"\btext\b|\bocr\b|\bcraft\b",
    "pre_edges": r"\bedges?\b",
    "pre_fashion_mnist": r"fashion[-_ ]?mnist",
    "pre_animal_mnist": r"animal[-_ ]?mnist",
    "pre_dogs": r"\bdogs?\b",
}
"""Pre-training slot -> regular expression searched in the lower-cased ``pretraining`` text and ``pretrain.source``."""

PRETRAINING_WEIGHT = 0.5
"""Value of a set pre-training slot. Architecture first: a change of pre-training data (one slot off, another on)
moves a vector by 0.71, half as far as a change of activation kind (1.41), so that a member's nearest neighbours are
of its own architecture family before they are other families pre-trained on the same data (at 1.0, 16 of the v2
zoo's 21 members with a family mate had one as nearest neighbour; at 0.5, 19: benchmarks/archi2vec_plot.py)."""

FEATURES: tuple[str, ...] = STRUCTURE_FEATURES + INPUT_FEATURES + (*PRETRAINING, "pre_other")
"""Name of each slot of an archi2vec vector, in order (the module docstring says what each means)."""

ACTIVATIONS: dict[str, str] = {
    "relu": "act_relu",
    "relu6": "act_relu6",
    "silu": "act_silu",
    "swish": "act_silu",
    "gelu": "act_gelu",
    "gelutanh": "act_gelu",
    "quickgelu": "act_gelu",
    "hardswish": "act_hardswish",
    "leakyrelu": "act_other",
    "prelu": "act_other",
    "elu": "act_other",
    "mish": "act_other",
    "tanh": "act_other",
    "sigmoid": "gates",
    "hardsigmoid": "gates",
}
"""Lower-cased activation class name (torch's and timm's) -> the slot it counts towards."""


def _pool_kind(entry: ZooEntry, model: nn.Module) -> str:
    """'avg', 'token', ... : how the member's feature map becomes its feature vector."""
    if entry.trunk_layers is not None or entry.arch in GRAPHS:
        return "avg"  # FrozenExtractor averages a trunk's output; a graph member averages a 4-D feature node
    pools = [m.pool_type for m in model.modules() if isinstance(m, SelectAdaptivePool2d)]
    if pools:
        return "avg" if pools[0].endswith("avg") else pools[0]
    return str(getattr(model, "global_pool", ""))


def _shapes_and_macs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(smallest output side of a strided conv or pool, multiply-accumulates) of one meta image through ``model``."""
    macs = 0
    smallest = input_size

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs, smallest
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif inputs[0].dim() == 3:  # attention over [B, N, C] tokens: q k^T and attn v
            tokens, channels = inputs[0].shape[-2:]
            macs += 2 * inputs[0].shape[0] * tokens * tokens * channels
        stride = getattr(module, "stride", 1)
        if max(stride if isinstance(stride, tuple) else (stride,)) > 1:
            smallest = min(smallest, *output.shape[-2:])

    hooked = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)
    handles = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, hooked) or "Attention" in type(m).__name__
    ]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, input_size, input_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return smallest, macs


def _structure(entry: ZooEntry, model: nn.Module, smallest: int) -> dict[str, float]:
    """The :data:`STRUCTURE_FEATURES` slots of a member, from its modules and its smallest strided output side."""
    attention_prefixes = tuple(name + "." for name, m in model.named_modules() if "Attention" in type(m).__name__)
    kinds: Counter[str] = Counter()
    activations: Counter[str] = Counter()
    widths: list[int] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            side = max(module.kernel_size)
            if module.kernel_size == module.stride and side >= 2:
                kinds["conv_patchify"] += 1
            else:
                kinds[f"conv_k{1 if side == 1 else 3 if side <= 3 else 5 if side <= 5 else 7}"] += 1
            if module.groups > 1:
                kinds["conv_depthwise" if module.groups == module.in_channels else "conv_grouped"] += 1
            widths.append(module.out_channels)
        elif isinstance(module, nn.Linear):
            kinds["linear"] += 1
            widths.append(module.out_features)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            kinds["norm_bn"] += 1
        elif isinstance(module, nn.LayerNorm):
            kinds["norm_ln"] += 1
        elif isinstance(module, nn.GroupNorm):
            kinds["norm_gn"] += 1
        elif type(module).__name__.lower() in ACTIVATIONS:
            activations[ACTIVATIONS[type(module).__name__.lower()]] += 1
        if isinstance(module, nn.Conv2d | nn.Linear) and name.startswith(attention_prefixes):
            kinds["attention"] += 1
    layers = len(widths)
    convs = layers - kinds["linear"]
    slots = {
        kind: kinds[kind] / layers
        for kind in ("conv_k1", "conv_k3", "conv_k5", "conv_k7", "conv_patchify", "linear", "attention",
                     "norm_bn", "norm_ln", "norm_gn")
    }  # fmt: skip
    slots["conv_depthwise"] = kinds["conv_depthwise"] / max(convs, 1)
    slots["conv_grouped"] = kinds["conv_grouped"] / max(convs, 1)
    slots["gates"] = activations.pop("gates", 0) / layers
    slots["norm_none"] = float(kinds["norm_bn"] + kinds["norm_ln"] + kinds["norm_gn"] == 0)
    total_activations = max(sum(activations.values()), 1)
    for act in ("act_relu", "act_relu6", "act_silu", "act_gelu", "act_hardswish", "act_other"):
        slots[act] = activations[act] / total_activations
    pool = _pool_kind(entry, model)
    slots |= {
        "depth": math.log2(layers) / 9,
        "params": (math.log10(sum(p.numel() for p in model.parameters())) - 4) / 5,
        "width_mean": sum(math.log2(w) for w in widths) / layers / 12,
        "width_max": math.log2(max(widths)) / 12,
        "feature_dim": math.log2(entry.feature_dim) / 12,
        "downsamplings": round(math.log2(entry.input_size / smallest)) / 6,
        "pool_avg": float(pool == "avg"),
        "pool_token": float(pool == "token"),
    }
    return slots


def archi2vec(entry: ZooEntry) -> torch.Tensor:
    """The member's float32 vector ``[len(FEATURES)]``, slots in :data:`FEATURES` order; reads no weights."""
    model = meta_model(entry)  # eval mode: batch norms accept one image
    smallest, macs = _shapes_and_macs(model, entry.input_size)
    slots = _structure(entry, model, smallest)
    slots["input_size"] = (math.log2(entry.input_size) - 4) / 6
    slots["macs"] = (math.log10(macs) - 5) / 6
    text = f"{entry.pretraining} {(entry.pretrain or {}).get('source', '')}".lower()
    for slot, pattern in PRETRAINING.items():
        slots[slot] = PRETRAINING_WEIGHT * (re.search(pattern, text) is not None)
    slots["pre_other"] = PRETRAINING_WEIGHT * (not any(slots[slot] for slot in PRETRAINING))
    return torch.tensor([slots[name] for name in FEATURES], dtype=torch.float32)


def zoo_vectors(manifest_path: str | Path = DEFAULT_MANIFEST) -> tuple[list[str], torch.Tensor]:
    """(member names in manifest order, their archi2vec vectors ``[M, len(FEATURES)]``)."""
    entries = load_manifest(manifest_path).models
    return [e.name for e in entries], torch.stack([archi2vec(e) for e in entries])
