"""archi2vec on the v2 zoo: deterministic, one length for all, families apart, pre-training kept to its own slots."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.archi2vec_plot import family, nearest_same_family
from ranker.zoo import archi2vec as a2v
from ranker.zoo import manifest as zoo

V2 = zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml"
ENTRIES = {e.name: e for e in zoo.load_manifest(V2).models}
STRUCTURE = [a2v.FEATURES.index(name) for name in a2v.STRUCTURE_FEATURES]


@pytest.fixture(scope="module")
def v2() -> tuple[list[str], torch.Tensor]:
    return a2v.zoo_vectors(V2)


def slots(vector: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    return {name: vector[a2v.FEATURES.index(name)].item() for name in names}


def test_every_member_gets_one_finite_float32_vector_of_the_documented_length(v2) -> None:
    names, vectors = v2
    assert names == list(ENTRIES)
    assert vectors.shape == (len(ENTRIES), len(a2v.FEATURES)) and vectors.dtype == torch.float32
    assert torch.isfinite(vectors).all()
    assert len(set(a2v.FEATURES)) == len(a2v.FEATURES)


def test_vectors_are_deterministic(v2) -> None:
    names, vectors = v2
    assert torch.equal(a2v.zoo_vectors(V2)[1], vectors)


def test_nearest_neighbour_is_of_the_same_family_for_most_members(v2) -> None:
    names, vectors = v2
    archs = [ENTRIES[n].arch for n in names]
    hits = nearest_same_family(vectors, [family(a) for a in archs], archs, other_arch=False)
    assert len(hits) == 21  # every member but the lone ByobNet has a family mate
    assert sum(hits) / len(hits) >= 0.8  # 19/21 measured; mobilenetv2_100 -> efficientnet_lite0, craft -> tiny_resnet


def test_one_architecture_under_three_pre_trainings_differs_only_in_pre_training_and_input_slots(v2) -> None:
    """Conv2dSame (pad_type='same') is a Conv2d that pads in forward: no extra module, and 10x10 final maps at
    300 px still round to five halvings, so even the structure slots read from shapes agree."""
    names, vectors = v2
    nets = [vectors[names.index(n)] for n in ("mobilenetv2_100", "mobilenetv2_100_coco_ssd", "mobilenetv2_100_dogs")]
    assert ENTRIES["mobilenetv2_100_coco_ssd"].arch_kwargs["pad_type"] == "same"
    for other in nets[1:]:
        assert torch.equal(other[STRUCTURE], nets[0][STRUCTURE])
        assert not torch.equal(other, nets[0])
    pre = tuple(a2v.PRETRAINING)
    assert slots(nets[0], pre)["pre_imagenet"] > 0 and sum(slots(nets[0], pre).values()) == a2v.PRETRAINING_WEIGHT
    assert [k for k, v in slots(nets[1], pre).items() if v] == ["pre_coco"]
    assert [k for k, v in slots(nets[2], pre).items() if v] == ["pre_imagenet", "pre_dogs"]


def test_the_two_vgg16_trunks_differ_in_batch_norm_and_length_only(v2) -> None:
    """craft is VGG16-BN cut after conv5_2 (12 convs), hed plain VGG16 cut after conv5_3 (13 convs)."""
    names, vectors = v2
    craft, hed = vectors[names.index("craft_vgg16_bn")], vectors[names.index("hed_vgg16")]
    differ = {a2v.STRUCTURE_FEATURES[k] for k, i in enumerate(STRUCTURE) if craft[i] != hed[i]}
    assert differ == {"norm_bn", "norm_none", "depth", "params", "width_mean"}
    pre = tuple(a2v.PRETRAINING)
    assert {k for k, v in slots(craft, pre).items() if v} == {"pre_imagenet", "pre_text"}
    assert {k for k, v in slots(hed, pre).items() if v} == {"pre_imagenet", "pre_edges"}
    sims = torch.nn.functional.normalize(vectors, dim=1) @ torch.nn.functional.normalize(hed, dim=0)
    sims[names.index("hed_vgg16")] = -1
    assert names[int(sims.argmax())] == "craft_vgg16_bn"


def test_attention_and_pooling_slots_tell_a_vit_from_cnns(v2) -> None:
    names, vectors = v2
    vit = slots(vectors[names.index("tiny_vit_fmnist")], ("attention", "pool_token", "pool_avg", "conv_patchify"))
    assert vit["attention"] > 0.4 and vit["pool_token"] == 1 and vit["pool_avg"] == 0 and vit["conv_patchify"] > 0
    cnns = [vectors[i] for i, n in enumerate(names) if family(ENTRIES[n].arch) not in ("ViT", "ConvNeXt")]
    assert all(slots(v, ("attention", "pool_token", "conv_patchify")) == dict.fromkeys(
        ("attention", "pool_token", "conv_patchify"), 0.0) for v in cnns)  # fmt: skip


def test_a_users_new_model_gets_a_vector_without_any_weights_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(*args: object, **kwargs: object) -> dict:
        raise AssertionError("weights were read")

    monkeypatch.setattr(zoo, "_read_weights", no_reading)
    monkeypatch.setattr(torch, "load", no_reading)
    entry = zoo.ZooEntry(name="my_resnet18", arch="resnet18", pretraining="my own photos", feature_dim=512,
                         input_size=224, weights_file="nowhere/my_resnet18.safetensors")  # fmt: skip
    vector = a2v.archi2vec(entry)
    assert vector.shape == (len(a2v.FEATURES),) and torch.isfinite(vector).all()
    expected = {"pre_other": a2v.PRETRAINING_WEIGHT, "norm_bn": 1.0, "act_relu": 1.0, "downsamplings": 5 / 6,
                "params": (math.log10(11_176_512) - 4) / 5}  # resnet18 without its fc: 11.18M parameters
    assert slots(vector, tuple(expected)) == pytest.approx(expected)
