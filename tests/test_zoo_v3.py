"""Zoo v3: every member loads through ranker.zoo and computes what its own runtime computes.

ONNX members are compared with onnxruntime on the same pixels, TF.js members with TensorFlow.js itself (run by
Node, ``ranker/zoo/npm/run_graph.mjs``); members inherited from v2 keep their own tests (test_zoo*.py). The
manifest's promises (domains, licences, sizes, no version ladder, parameter budgets) are checked here too.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from PIL import Image
from skimage.data import astronaut, chelsea, coffee

from ranker.tasks import benchmark as bm
from ranker.tune.finetune import finetune
from ranker.zoo import archi2vec, tfjs
from ranker.zoo import manifest as zoo

V3 = zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v3.yaml"
RUN_GRAPH = zoo.REPO_ROOT / "ranker" / "zoo" / "npm" / "run_graph.mjs"
ENTRIES = {e.name: e for e in zoo.load_manifest(V3).models}
TFJS = [name for name, e in ENTRIES.items() if e.arch == "tfjs"]


@pytest.fixture(scope="module")
def extractors() -> dict[str, zoo.FrozenExtractor]:
    return {}


def extractor(cache: dict, name: str) -> zoo.FrozenExtractor:
    if name not in cache:
        cache[name] = zoo.load_extractor(ENTRIES[name])
    return cache[name]


def pixels(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random network inputs ``[B, 3, S, S]`` in [0, 1] (the graphs' own normalizations are linear in them)."""
    return torch.from_numpy(np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32))


def photo(kind, size: int, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    image = Image.fromarray(kind())
    return (image.crop(box) if box else image).resize((size, size))


def test_v3_has_sixteen_real_members_from_seven_domains_without_a_version_ladder():
    entries = list(ENTRIES.values())
    assert len(entries) >= 16
    assert len({e.domain for e in entries}) >= 7
    domains = {e.domain for e in entries}
    assert {"ImageNet", "self-supervised", "detection", "faces", "pose", "text", "medical"} <= domains
    assert all(e.licence and e.weights_sha256 and e.weights_package and not e.hub for e in entries)
    assert not any(e.pretrain for e in entries)  # no member pre-trained in this repository
    families = Counter(re.sub(r"_?(lite)?\d.*$", "", e.arch) for e in entries if e.arch not in zoo.GRAPHS)
    sizes = {f: {e.arch for e in entries if e.arch.startswith(f)} for f in families}
    assert all(len(archs) <= 2 for archs in sizes.values()), sizes  # e.g. EfficientNet-Lite0 and -Lite3 only
    params = sorted(zoo.parameter_count(e) for e in entries)
    assert params[-1] / params[1] <= 30  # DINOv2's 22M against PP-OCR's 0.85M
    assert params[-1] / params[0] <= 41  # and against the 0.55M MobileFace embedding: faces allow no bigger one here


@pytest.mark.integration
@pytest.mark.parametrize("name", TFJS)
def test_tfjs_member_matches_tensorflow_js(tmp_path, extractors, name):
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed to run TensorFlow.js (apt-get install nodejs; npm ci --prefix ranker/zoo/npm)")
    entry = ENTRIES[name]
    model_json = zoo.weights_path(entry)
    nodes = json.loads(model_json.read_text())["modelTopology"]["node"]
    placeholder = next(n for n in nodes if n["op"] == "Placeholder")
    batch = 1 if placeholder["attr"]["shape"]["shape"]["dim"][0]["size"] == "1" else 2
    size = entry.input_size
    fixed = placeholder["attr"]["shape"]["shape"]["dim"][1]["size"]
    if fixed != "-1":
        size = int(fixed)  # the graph's own fixed input size
    x = pixels(size, batch)
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    nhwc.tofile(tmp_path / "in.f32")
    done = subprocess.run(["node", str(RUN_GRAPH), str(model_json), str(tmp_path / "in.f32"), str(batch), str(size),
                           str(size), entry.feature_node, str(tmp_path / "out.f32")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    shape = json.loads(done.stdout)
    reference = np.fromfile(tmp_path / "out.f32", np.float32).reshape(shape)
    reference = reference.mean(axis=(1, 2)) if reference.ndim == 4 else reference.reshape(batch, -1)
    ours = extractor(extractors, name).trunk(x).numpy()  # the trunk: the graph without the manifest's normalization
    assert ours.shape == (batch, entry.feature_dim)
    assert np.abs(ours - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())


def onnx_reference(path: Path, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """onnxruntime's value of node output ``output`` on ``feed``."""
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([output], feed)[0]


def test_dinov2_class_token_matches_onnxruntime(extractors):
    """With the position embedding resampled as the exported graph does (bicubic, no antialiasing) every token
    agrees to float precision; the zoo's member lets timm resample it (with antialiasing): cosine above 0.999."""
    entry = ENTRIES["dinov2_vits14"]
    ex = extractor(extractors, "dinov2_vits14")
    x = torch.stack([ex.transform(photo(kind, 224)) for kind in (chelsea, coffee)])
    reference = onnx_reference(zoo.weights_path(entry), "/backbone/layernorm/Add_1_output_0",
                               {"input_image": x.numpy()})
    fixed = timm.create_model(entry.arch, num_classes=0, img_size=224).eval()
    state = dict(ex.trunk.state_dict())
    grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    fixed.load_state_dict(state)
    with torch.inference_mode():
        tokens = fixed.forward_features(x).numpy()
    assert np.abs(tokens - reference).max() < 1e-3 * np.abs(reference).max()
    ours, cls = ex.trunk(x).numpy(), reference[:, 0]
    cosine = (ours * cls).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(cls, axis=1)
    assert cosine.min() > 0.999


def test_brain_mri_vgg16_trunk_matches_onnxruntime(extractors):
    entry = ENTRIES["vgg16_brain_mri"]
    x = pixels(240)
    reference = onnx_reference(zoo.weights_path(entry), "functional_1/block5_pool_1/MaxPool2d:0",
                               {"input": x.permute(0, 2, 3, 1).contiguous().numpy()})
    ours = extractor(extractors, "vgg16_brain_mri").trunk(x)
    assert np.abs(ours.numpy() - reference).max() < 1e-4  # the file transposes to NCHW itself


def test_ppocr_detector_backbone_matches_onnxruntime(extractors):
    entry = ENTRIES["ppocrv4_det"]
    x = pixels(224)
    bgr = x.flip(1)  # the manifest feeds the file BGR, as PaddleOCR does
    reference = onnx_reference(zoo.weights_path(entry), entry.feature_node, {"x": bgr.numpy()}).mean(axis=(2, 3))
    ours = extractor(extractors, "ppocrv4_det").trunk(x).numpy()
    assert np.abs(ours - reference).max() < 1e-4


def test_face_models_see_a_face_in_its_mirror_image_and_not_in_a_cat(extractors):
    face_box = (170, 30, 270, 140)  # the astronaut's face
    for name in ("faceres", "mobileface"):
        ex = extractor(extractors, name)
        s = ex.entry.input_size
        face = photo(astronaut, s, face_box)
        images = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), photo(chelsea, s), photo(coffee, s)]
        f = torch.nn.functional.normalize(ex(torch.stack([ex.transform(i) for i in images])), dim=1)
        mirror, cat, cup = (f[0] @ f[1]).item(), (f[0] @ f[2]).item(), (f[0] @ f[3]).item()
        assert mirror > max(cat, cup) + 0.2, (name, mirror, cat, cup)


@pytest.mark.integration
def test_centernet_finds_a_person_and_a_cup_with_the_manifest_normalization():
    """Its COCO heatmap (the graph's own head, past the feature node) tops person on the astronaut, cup on coffee."""
    entry = ENTRIES["centernet_mobilenetv3"]
    head = tfjs.TfjsGraph.from_file(zoo.weights_path(entry), "tower_0/Sigmoid")
    transform = zoo.entry_transform(entry)
    person, cup = 0, 41  # COCO-80 indices
    with torch.inference_mode():
        for image, expected in ((photo(astronaut, 512), person), (photo(coffee, 512), cup)):
            assert head.run(transform(image)[None]).amax(dim=(2, 3))[0].argmax().item() == expected


def test_every_v3_member_gets_an_archi2vec_vector_from_its_own_graph():
    names, vectors = archi2vec.zoo_vectors(V3)
    assert vectors.shape == (len(ENTRIES), len(archi2vec.FEATURES)) and torch.isfinite(vectors).all()
    pool = archi2vec.FEATURES.index("pool_avg")
    assert all(vectors[names.index(n), pool] == 1 for n in TFJS)
    assert len({tuple(v.tolist()) for v in vectors}) >= len(names) - 2  # the MobileNetV2 triplet shares structure


def test_a_graph_member_trains_its_folded_constants():
    graph = zoo.load_extractor(ENTRIES["faceres"]).trunk
    scales = [m for m in graph.modules() if isinstance(m, tfjs.WithConstant)]
    assert scales and all(isinstance(m.constant, torch.nn.Parameter) for m in scales if m.constant.dim())
    graph.train().requires_grad_(True)
    graph(pixels(224)).square().sum().backward()
    assert all(m.constant.grad is not None for m in scales if m.constant.dim())


def test_a_tfjs_op_outside_the_executor_is_refused_by_name():
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "y", "op": "Erf", "input": ["x"]},
    ]
    with pytest.raises(zoo.ZooError, match="Erf"):
        tfjs.TfjsGraph(nodes, {}, "y")


def test_uint8_quantized_tfjs_weights_are_dequantized(tmp_path):
    weights = [{"name": "c", "shape": [2, 2], "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}}]
    (tmp_path / "w.bin").write_bytes(bytes([0, 1, 2, 255]))
    (tmp_path / "model.json").write_text(json.dumps(
        {"modelTopology": {"node": []}, "weightsManifest": [{"paths": ["w.bin"], "weights": weights}]}))
    _, arrays = tfjs.read_weights(tmp_path / "model.json")
    assert arrays["c"].tolist() == [[-1.0, -0.5], [0.0, 126.5]]


def test_legacy_tf_bilinear_resize_samples_at_i_times_in_over_out():
    x = torch.arange(4.0).reshape(1, 1, 1, 4)
    out = tfjs.Resize("ResizeBilinear", [1, 8], align_corners=False, half_pixel_centers=False)(x)
    assert out.flatten().tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])


def test_a_changed_graph_weight_is_refused(tmp_path):
    entry = ENTRIES["mobileface"]
    source = zoo.weights_path(entry)
    for file in source.parent.glob("mobileface.*"):
        shutil.copy(file, tmp_path / file.name)
    data = bytearray((tmp_path / "mobileface.bin").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "mobileface.bin").write_bytes(bytes(data))
    moved = dataclasses.replace(entry, weights_package=None, weights_file=str(tmp_path / "mobileface.json"))
    with pytest.raises(zoo.ZooError, match="hash"):
        zoo.load_extractor(moved)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mobileface", "ppocrv4_det"])
def test_graph_members_fine_tune_with_the_benchmarks_recipe(tiny_bench, name):
    train, test = bm.task_parts(tiny_bench.config.tasks[0], tiny_bench.config)
    recipe = bm.FinetuneRecipe(steps=2, max_input_size=0)
    accuracy, size, device = finetune(ENTRIES[name], train.task, test.task, recipe)
    assert 0 <= accuracy <= 100 and size == ENTRIES[name].input_size and device == "cpu"


def test_members_marked_fixed_size_are_the_ones_that_fail_elsewhere():
    """A graph member that resizes or flattens to fixed shapes must say so (the recipe then keeps it native)."""
    for name, entry in ENTRIES.items():
        if entry.arch not in zoo.GRAPHS:
            continue
        trunk = zoo.load_extractor(entry).trunk
        try:
            ok = trunk(pixels(96, batch=3)).shape == (3, entry.feature_dim)
        except RuntimeError:
            ok = False
        assert ok != entry.fixed_size, name
