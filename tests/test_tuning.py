"""B-Tuning: LogME's posterior weights against plain numpy, pi, the teachers' term, the recipe it shares with the
benchmark's fine-tuning, and ``python -m ranker.tune`` end to end on real digits with real zoo members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import help_output_and_heavy_imports
from safetensors import safe_open
from safetensors.torch import load_file

from benchmarks import btuning as study
from benchmarks import member_lr
from ranker import transfer
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import loaders
from ranker.transfer.logme import posterior_weights
from ranker.tune import __main__ as cli
from ranker.tune import btuning, distill
from ranker.tune.finetune import FinetuneModule, finetune, fit, images, recipe_entry
from ranker.zoo import manifest as zoo

OFFLINE = export.benchmark_checkpoint("offline")
"""The offline checkpoint: its zoo's small members, which these tests tune on CPU, and the names they misspell."""


def plain_posterior(f: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Posterior mean weights ``[K, D]``: the evidence fixed point with explicit A = alpha I + beta F^T F and
    np.linalg.solve, one target at a time; m is the last step's, whose alpha and beta the evidence uses."""
    n, d = f.shape
    gram = f.T @ f
    sigma = np.linalg.eigvalsh(gram)
    weights = []
    for t in targets.T:
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * gram, f.T @ t)
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            new_alpha = gamma / (m @ m + 1e-5)
            new_beta = (n - gamma) / (np.sum((f @ m - t) ** 2) + 1e-5)
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) <= 1e-3
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        weights.append(m)
    return np.stack(weights)


@pytest.mark.parametrize("n, d", [(120, 16), (20, 50)])
def test_posterior_weights_match_plain_numpy(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    f = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(4, d))[y]
    score, weights = posterior_weights(f, y)
    expected = plain_posterior(f, np.eye(4)[y])
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
    assert score == transfer.get("logme")(f, y)
    regression = rng.normal(size=(n, 2)) + f[:, :2]
    np.testing.assert_allclose(posterior_weights(f, regression)[1].numpy(), plain_posterior(f, regression), rtol=1e-6,
                               atol=1e-9)


def test_pi_is_the_softmax_of_evidence_over_the_temperature() -> None:
    evidence = [0.21, 0.05, 0.18]
    expected = np.exp(np.array(evidence) / 0.1) / np.exp(np.array(evidence) / 0.1).sum()
    np.testing.assert_allclose(btuning.teacher_pi(evidence).numpy(), expected, rtol=1e-12)


def test_the_commands_lambda_and_temperature_are_what_won_on_the_training_tasks() -> None:
    assert study.chosen_settings()["btuning"] == [{"lambda": btuning.TRADEOFF, "T": btuning.TEMPERATURE}]
    assert study.RECIPE.steps == btuning.STEPS


def test_the_studys_tasks_are_in_the_papers_regime() -> None:
    """500+ training images each, copies of one image in one group, held-out images never augmented, and the test
    tasks' classes new: no (dataset, class) of a test task is in a training task."""
    seen = {"train": set(), "test": set()}
    for task in study.tasks():
        train, test, groups = study.materialize(task)
        assert len(train) >= study.MIN_TRAIN and len(groups) == len(train)
        for g in np.unique(groups):
            assert len(set(train.labels[groups == g])) == 1
        assert len(test) >= 89 and (not task.augment or len(np.unique(groups)) < len(train))
        seen[task.role] |= {(task.spec.dataset, c) for c in task.spec.classes}
    assert len([t for t in study.tasks() if t.role == "test"]) >= 8 and not seen["train"] & seen["test"]


@pytest.fixture
def digits_parts(tiny_bench: bm.Benchmark) -> tuple[bm.TaskPart, bm.TaskPart]:
    """A 3-way task of real digits (5 training images per class); features cached under tmp_path."""
    return bm.task_parts(tiny_bench.config.tasks[0], tiny_bench.config)


def test_teach_weights_teachers_by_their_logme_scores(digits_parts) -> None:
    train = digits_parts[0].task
    recipe = bm.FinetuneRecipe()
    target, teachers = zoo.get_entry("tiny_resnet_fmnist"), [zoo.get_entry(m) for m in ("tiny_byobnet_mixed",
                                                                                         "tiny_convnext_amnist")]
    teaching = btuning.teach(target, teachers, train, recipe)
    feats = {e.name: btuning.frozen_features(e, train, recipe) for e in teachers}
    scores = [transfer.get("logme")(feats[e.name], train.labels) for e in teachers]
    assert teaching.evidence == pytest.approx(scores, rel=1e-12)
    assert teaching.pi == pytest.approx(btuning.teacher_pi(scores).tolist(), rel=1e-12)
    mapped = sum(p * btuning.crossfit_mapped(feats[e.name], train.labels, np.arange(len(train)))
                 for p, e in zip(teaching.pi, teachers, strict=True))
    torch.testing.assert_close(teaching.targets, mapped.float())
    live = btuning.train_mode_features(target, train, recipe)
    torch.testing.assert_close(teaching.target_weights, posterior_weights(live, train.labels)[1].float())
    assert teaching.targets.shape == (len(train), 3) and teaching.target_weights.shape == (3, target.feature_dim)


def test_folds_keep_an_images_copies_together_and_spread_every_class() -> None:
    groups = np.repeat(np.arange(30), 4)  # 30 images, 4 copies each, 3 classes of 10 images in a row
    fold = btuning.fold_ids(groups, folds=5)
    assert all(len(set(fold[groups == g])) == 1 for g in range(30))
    labels = np.repeat(np.arange(3), 40)
    assert all(set(fold[labels == c]) == set(range(5)) for c in range(3))


def test_crossfit_mapped_predicts_each_fold_from_the_others() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    feats = torch.as_tensor(rng.normal(size=(60, 40)) + 2.0 * rng.normal(size=(3, 40))[labels])
    groups = np.arange(60)
    out = btuning.crossfit_mapped(feats, labels, groups, folds=4)
    fold = btuning.fold_ids(groups, 4)
    for f in range(4):
        kept = np.flatnonzero(fold != f)
        held = np.flatnonzero(fold == f)
        weights = posterior_weights(feats[kept], labels[kept])[1]
        torch.testing.assert_close(out[held], feats[held] @ weights.T)
    in_sample = feats @ posterior_weights(feats, labels)[1].T  # 60 images in 40 dims: the labels come back
    assert torch.equal(in_sample.argmax(1), torch.as_tensor(labels))
    assert (out - torch.eye(3, dtype=out.dtype)[labels]).pow(2).mean() > 2 * (
        in_sample - torch.eye(3, dtype=out.dtype)[labels]).pow(2).mean()


def test_train_mode_features_use_batch_statistics_and_leave_no_trace(digits_parts) -> None:
    train, recipe = digits_parts[0].task, bm.FinetuneRecipe(batch_size=4)
    target = zoo.get_entry("tiny_resnet_fmnist")
    live = btuning.train_mode_features(target, train, recipe)
    torch.testing.assert_close(live, btuning.train_mode_features(target, train, recipe))  # a fresh trunk each call
    frozen = btuning.frozen_features(target, train, recipe)
    assert live.shape == frozen.shape and (live - frozen).abs().max() > 1e-3


def test_soft_labels_are_the_pi_weighted_cross_fitted_probes(digits_parts) -> None:
    train, recipe = digits_parts[0].task, bm.FinetuneRecipe()
    teachers = [zoo.get_entry(m) for m in ("tiny_byobnet_mixed", "tiny_convnext_amnist")]
    soft = distill.soft_labels(teachers, train, recipe, [0.75, 0.25])
    groups = np.arange(len(train))
    probes = [distill.crossfit_probe(btuning.frozen_features(e, train, recipe), train.labels, groups)
              for e in teachers]
    np.testing.assert_allclose(soft.numpy(), 0.75 * probes[0] + 0.25 * probes[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(soft.sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.integration
def test_zero_tradeoff_is_the_benchmarks_finetune_bit_for_bit(digits_parts) -> None:
    train, test = digits_parts
    recipe = bm.FinetuneRecipe(steps=6)
    target = zoo.get_entry("tiny_resnet_fmnist")
    teaching = btuning.teach(target, [zoo.get_entry("tiny_byobnet_mixed")], train.task, recipe)
    plain = btuning.tune(target, teaching, train.task, recipe, test.task, tradeoff=0.0)
    assert plain.test_accuracy == finetune(target, train.task, test.task, recipe)[0]
    assert plain.losses["teachers"] == [0.0] * 6 and plain.losses["total"] == plain.losses["cross_entropy"]
    tuned = btuning.tune(target, teaching, train.task, recipe, test.task)
    assert min(tuned.losses["teachers"]) > 0
    assert tuned.losses["cross_entropy"][0] == plain.losses["cross_entropy"][0]  # same first batch, same head
    assert not torch.equal(tuned.module.head.weight, plain.module.head.weight)


@pytest.mark.integration
def test_zero_alpha_distillation_is_plain_finetuning(digits_parts) -> None:
    train, test = digits_parts
    recipe = bm.FinetuneRecipe(steps=4)
    target = zoo.get_entry("tiny_resnet_fmnist")
    soft = distill.soft_labels([zoo.get_entry("tiny_byobnet_mixed")], train.task, recipe, [1.0])
    plain = distill.distill(target, soft, train.task, recipe, test.task, alpha=0.0)
    assert plain.test_accuracy == finetune(target, train.task, test.task, recipe)[0]
    taught = distill.distill(target, soft, train.task, recipe, test.task, alpha=0.9)
    assert taught.losses["cross_entropy"][0] == plain.losses["cross_entropy"][0] and min(taught.losses["distill"]) > 0


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real digits of 3 classes as .npz files: 12 training and 10 held-out images per class."""
    task = loaders.digits()
    folder = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    parts = {"train": [], "test": []}
    for c in (1, 4, 7):
        members = rng.permutation(np.flatnonzero(task.labels == c))
        parts["train"].append(members[:12])
        parts["test"].append(members[12:22])
    paths = []
    for name, chunks in parts.items():
        idx = np.concatenate(chunks)
        np.savez(folder / f"{name}.npz", images=task.images[idx], labels=np.searchsorted([1, 4, 7], task.labels[idx]),
                 class_names=np.array(["one", "four", "seven"]))
        paths.append(folder / f"{name}.npz")
    return paths[0], paths[1]


@pytest.mark.integration
def test_command_ranks_tunes_and_writes_the_model_json_and_plot(digits_npz, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    train, test = digits_npz
    out = tmp_path / "tuned"
    assert cli.main(["--checkpoint", str(OFFLINE), "--data", str(train), "--test", str(test), "-k", "2", "--out",
                     str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["btuning.json", "loss.png", "model.safetensors"]
    result = json.loads((out / "btuning.json").read_text())
    assert result["target"] == result["ranking"][0] and result["teachers"] == result["ranking"][1:3]
    assert sorted(result["ranking"]) == sorted(zoo.list_models())
    assert sum(result["pi"]) == pytest.approx(1.0) and len(result["pi"]) == 2
    assert set(result["logme"]) == {result["target"], *result["teachers"]}
    assert result["classes"] == ["one", "four", "seven"] and result["n_train"] == 36 and result["n_test"] == 30
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out accuracy" in capsys.readouterr().out
    assert result["recipe"]["steps"] == btuning.STEPS and result["tradeoff"] == btuning.TRADEOFF

    # the saved tensors are the tuned model: loaded into the benchmark's FinetuneModule they score the same
    entry = zoo.get_entry(result["target"])
    with safe_open(out / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["target"] == entry.name and json.loads(meta["classes"]) == result["classes"]
    module = FinetuneModule(zoo.load_extractor(entry), 3, bm.FinetuneRecipe())
    module.load_state_dict(load_file(out / "model.safetensors"))
    sized = btuning.recipe_entry(entry, bm.FinetuneRecipe())
    assert int(meta["input_size"]) == sized.input_size == result["input_size"]
    accuracy = btuning.accuracy(module, loaders.load_dataset(str(test)), zoo.entry_transform(sized),
                                torch.device("cpu"))
    assert accuracy == pytest.approx(result["test_accuracy"])


@pytest.mark.parametrize("extra, message", [
    (["--target", "no_such_net", "--teachers", "tiny_byobnet_mixed"], "unknown model(s) ['no_such_net']"),
    (["--target", "tiny_byobnet_mixed", "--teachers", "tiny_byobnet_mixed"], "both the target and a teacher"),
    (["--teachers", "tiny_byobnet_mixed", "-k", "2"], "pass --teachers or -k, not both"),
    (["-k", "18"], "-k 18 is outside 1..17"),
    (["--teachers", "tiny_vit_fmnist", "tiny_vit_fmnist"], "names a model twice"),
    (["--test", "digits"], "give both the same classes"),
    (["--data", "no/such/folder"], "no/such/folder"),
])
def test_user_mistakes_end_with_one_line_and_status_2(digits_npz, tmp_path, capsys, extra, message) -> None:
    args = ["--checkpoint", str(OFFLINE), "--data", str(digits_npz[0]), "--out", str(tmp_path / "out"), *extra]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tune: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_an_out_path_that_is_a_file_is_refused(digits_npz, tmp_path, capsys) -> None:
    (tmp_path / "taken").write_text("")
    assert cli.main(["--data", str(digits_npz[0]), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.integration
def test_help_loads_no_model_library_and_defaults_are_the_packages() -> None:
    text, loaded = help_output_and_heavy_imports("sys.argv = ['ranker.tune', '--help']; runpy.run_module("
                                                 "'ranker.tune', run_name='__main__')")
    assert loaded == [] and "--teachers" in text
    defaults = {a.dest: a.default for a in cli.parser()._actions}
    assert defaults["checkpoint"] == export.DEFAULT_CHECKPOINT and defaults["manifest"] is None  # its zoo.yaml


def test_a_recipe_gives_each_member_its_own_learning_rate_and_the_same_head_draws() -> None:
    recipe = bm.FinetuneRecipe(lrs={"tiny_resnet_fmnist": 1e-5}, head_norm=["tiny_resnet_fmnist"], head_lr_mult=10.0)
    modules = {}
    for name, r in (("tiny_resnet_fmnist", recipe), ("tiny_convnext_amnist", recipe),
                    ("tiny_resnet_fmnist", bm.FinetuneRecipe())):
        torch.manual_seed(0)
        modules[name, bool(r.head_norm)] = FinetuneModule(zoo.load_extractor(name), 3, r)
    lrs = {key: [g["lr"] for g in m.configure_optimizers()[0][0].param_groups] for key, m in modules.items()}
    assert lrs["tiny_resnet_fmnist", True] == pytest.approx([1e-5, 1e-4])
    assert lrs["tiny_convnext_amnist", True] == pytest.approx([2e-4, 2e-3])  # not named: the recipe's lr
    assert isinstance(modules["tiny_convnext_amnist", True].head, torch.nn.Linear)  # nor standardized
    normed, plain = modules["tiny_resnet_fmnist", True].head, modules["tiny_resnet_fmnist", False].head
    assert isinstance(normed[0], torch.nn.BatchNorm1d) and not list(normed[0].parameters())
    assert torch.equal(normed[1].weight, plain.weight)  # the standardization draws nothing: same head init


def test_head_norm_standardizes_tiny_spread_features_in_eval_mode_too() -> None:
    """BlazePose's pooled features are ~0.5 with a spread of 0.015 between images: standardized with the training
    batches' statistics they keep their signal after training; the default running statistics (momentum 0.1,
    started at variance 1) would still hold 4% of that 1 after 30 steps and shrink the signal twentyfold."""
    torch.manual_seed(0)
    module = FinetuneModule(zoo.load_extractor("tiny_resnet_fmnist"), 3,
                            bm.FinetuneRecipe(head_norm=["tiny_resnet_fmnist"]))
    norm = module.head[0].train()
    width = norm.num_features
    for _ in range(30):
        norm(0.5 + 0.015 * torch.randn(16, width))
    norm.eval()
    out = norm(0.5 + 0.015 * torch.randn(256, width))
    assert out.std(0).mean().item() == pytest.approx(1.0, abs=0.1) and out.mean().abs().item() < 0.1


@pytest.mark.integration
def test_a_standardized_head_is_evaluated_with_the_trained_trunks_statistics(digits_parts) -> None:
    """Statistics averaged over the steps mix in the features of trunks the steps moved away from: measured on v3,
    re-estimating them with the final trunk raised held-out accuracy by 2 to 9 points (MobileFace, DINOv2, PoseNet)."""
    train = digits_parts[0].task
    recipe = bm.FinetuneRecipe(steps=4, head_norm=["tiny_resnet_fmnist"])
    entry = zoo.get_entry("tiny_resnet_fmnist")
    transform = zoo.entry_transform(recipe_entry(entry, recipe))
    torch.manual_seed(0)
    module = FinetuneModule(zoo.load_extractor(entry), train.num_classes, recipe)
    fit(module, train, transform, recipe)
    with torch.no_grad():
        feats = module.eval().features(images(train, transform))
    norm = module.head[0]
    torch.testing.assert_close(norm.running_mean, feats.mean(0))
    torch.testing.assert_close(norm.running_var, feats.var(0))


def test_member_lr_picks_the_best_mean_and_the_first_on_a_tie() -> None:
    plain, normed = (2e-4, False), (2e-5, True)
    runs = {(plain, "a", "m"): 90.0, (plain, "b", "m"): 70.0, (normed, "a", "m"): 85.0, (normed, "b", "m"): 85.0,
            (plain, "a", "n"): 80.0, (plain, "b", "n"): 80.0, (normed, "a", "n"): 70.0, (normed, "b", "n"): 90.0}
    assert member_lr.choose(runs, [plain, normed], ["a", "b"], "m") == (normed, [80.0, 85.0])
    assert member_lr.choose(runs, [plain, normed], ["a", "b"], "n") == (plain, [80.0, 80.0])


def test_member_lr_runs_accumulate_in_one_csv(tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    for lr, norm, accuracy in (("0.0002", "0", "91.5"), ("2e-05", "1", "88.7")):
        member_lr.add(out, {"lr": lr, "head_norm": norm, "task": "t", "model": "m", "accuracy": accuracy,
                            "seconds": "1.0"})
    assert member_lr.read(out) == {((2e-4, False), "t", "m"): 91.5, ((2e-5, True), "t", "m"): 88.7}
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]  # no lock file left beside it


def test_v3_recipe_holds_member_lr_choice_from_its_runs() -> None:
    """benchmark.yaml's ``lrs`` and ``head_norm`` are what the sweep's runs choose, not values edited by hand."""
    bench = bm.load_benchmark("v3")
    base = bench.config.finetune
    runs = member_lr.measured(bench, list(member_lr.TASKS)) | member_lr.read(member_lr.HERE / "member_lr_v3.csv")
    candidates = member_lr.candidate_list(list(member_lr.LRS), base)
    chosen = {m: member_lr.choose(runs, candidates, list(member_lr.TASKS), m)[0] for m in bench.models}
    lrs, head_norm = member_lr.recipe_fields(chosen, base)
    assert lrs == base.lrs and set(head_norm) == set(base.head_norm)
    assert chosen["mobilenetv2_100"] == (2e-4, False) and chosen["dinov2_vits14"] == (2e-5, True)


def test_member_lr_refuses_test_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["member_lr", "--benchmark", "v3", "--tasks", "lfw_subset-2way-10shot-01"])
    with pytest.raises(SystemExit, match="choose on training tasks only"):
        member_lr.main()


def test_a_recipe_sizes_members_by_name_and_never_above_native() -> None:
    recipe = bm.FinetuneRecipe(max_input_size=64, input_sizes={"mobilenetv2_100": 160, "craft_vgg16_bn": 512})
    assert recipe_entry(zoo.get_entry("mobilenetv2_100"), recipe).input_size == 160
    assert recipe_entry(zoo.get_entry("craft_vgg16_bn"), recipe).input_size == 128  # native 128: not upscaled
    assert recipe_entry(zoo.get_entry("efficientnet_lite0"), recipe).input_size == 64  # the cap for the rest
    assert recipe_entry(zoo.get_entry("efficientnet_lite0"), bm.FinetuneRecipe(max_input_size=0)).input_size == 224


def test_a_vit_is_sized_to_a_multiple_of_its_patch() -> None:
    dinov2 = zoo.get_entry("dinov2_vits14", zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v3.yaml")
    assert zoo.input_multiple(dinov2) == 14
    assert recipe_entry(dinov2, bm.FinetuneRecipe(max_input_size=128)).input_size == 126
    assert recipe_entry(dinov2, bm.FinetuneRecipe(max_input_size=0)).input_size == 224


def test_a_member_that_flattens_its_map_keeps_its_native_size() -> None:
    mobileface = zoo.get_entry("mobileface", zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v3.yaml")
    assert recipe_entry(mobileface, bm.FinetuneRecipe(max_input_size=64)).input_size == 112
