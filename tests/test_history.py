"""HistoryStore semantics, and the history builder on a tiny zoo of real models and real data."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from data import build_history
from ranker.tasks import benchmark as bm
from ranker.tasks import features, stats
from ranker.tasks.history import COLUMNS, HistoryError, HistoryStore, Record
from ranker.zoo import manifest as zoo


def _rec(task: str, model: str, value: float, kind: str = "finetune", metric: str = "top1_accuracy", **kw) -> Record:
    return Record(task=task, model=model, kind=kind, metric=metric, value=value, **kw)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    records = [
        _rec("a", "m1", 87.5, recipe="finetune-v1", epochs=3, lr=2e-4, input_size=64, n_train=60, n_test=90,
             seed=1, wall_s=12.25, device="cpu", source="test, with a comma"),
        _rec("a", "m1", 80.0, kind="linear_probe"),
        _rec("b", "m2", -0.125, kind="proxy", metric="proxy_score"),
    ]
    HistoryStore(records).save(tmp_path / "h.csv")
    loaded = HistoryStore.load(tmp_path / "h.csv")

    def plain(r: Record) -> tuple:  # NaN != NaN, so compare NaN fields by their text
        return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in dataclasses.astuple(r))

    assert [plain(r) for r in loaded.records()] == [plain(r) for r in records]
    assert math.isnan(loaded.get("a", "m1", "linear_probe").lr)


def test_last_added_record_wins_and_merge_prefers_the_other_store() -> None:
    store = HistoryStore([_rec("a", "m1", 1.0), _rec("a", "m1", 2.0)])
    assert len(store) == 1 and store.get("a", "m1", "finetune").value == 2.0
    other = HistoryStore([_rec("a", "m1", 3.0), _rec("b", "m1", 4.0)])
    store.merge(other)
    assert [(r.task, r.value) for r in store.records()] == [("a", 3.0), ("b", 4.0)]


def test_matrix_has_nan_for_missing_pairs_and_follows_the_requested_order() -> None:
    store = HistoryStore([_rec("t1", "m1", 1.0), _rec("t1", "m2", 2.0), _rec("t2", "m2", 3.0),
                          _rec("t2", "m1", 9.0, kind="linear_probe")])
    tasks, models, values = store.matrix("finetune")
    assert (tasks, models) == (["t1", "t2"], ["m1", "m2"])
    np.testing.assert_array_equal(values, [[1.0, 2.0], [np.nan, 3.0]])
    _, _, values = store.matrix("finetune", tasks=["t2", "t3"], models=["m2", "m1"])
    np.testing.assert_array_equal(values, [[3.0, np.nan], [np.nan, np.nan]])


def test_repeated_runs_keep_a_record_per_seed_and_the_matrix_averages_them() -> None:
    store = HistoryStore([_rec("t1", "m1", 70.0), _rec("t1", "m1", 80.0, seed=1), _rec("t1", "m2", 50.0, seed=1)])
    assert len(store) == 3 and store.seeds("finetune") == [0, 1]
    np.testing.assert_array_equal(store.matrix("finetune")[2], [[75.0, 50.0]])  # the mean over the seeds measured
    np.testing.assert_array_equal(store.matrix("finetune", seed=0)[2], [[70.0, np.nan]])
    np.testing.assert_array_equal(store.matrix("finetune", seed=1)[2], [[80.0, 50.0]])


def test_malformed_files_and_records_are_refused(tmp_path: Path) -> None:
    (tmp_path / "cols.csv").write_text("task,model,kind,value\na,m,finetune,1\n")
    with pytest.raises(HistoryError, match="lacks column"):
        HistoryStore.load(tmp_path / "cols.csv")
    row = dict.fromkeys(COLUMNS, "0") | {"task": "a", "model": "m", "kind": "finetune", "value": "high"}
    (tmp_path / "value.csv").write_text(",".join(COLUMNS) + "\n" + ",".join(row[c] for c in COLUMNS) + "\n")
    with pytest.raises(HistoryError, match="column value"):
        HistoryStore.load(tmp_path / "value.csv")
    with pytest.raises(HistoryError, match="kind"):
        _rec("a", "m", 1.0, kind="zero_shot")
    with pytest.raises(HistoryError, match="finite"):
        _rec("a", "m", float("nan"))


def _values(path: Path) -> dict[tuple[str, str, str], float]:
    return {r.key: r.value for r in HistoryStore.load(path).records()}


@pytest.mark.integration
def test_shards_cover_every_pair_once_and_merge_to_the_unsharded_result(tiny_bench: bm.Benchmark,
                                                                          tmp_path: Path) -> None:
    root = tiny_bench.root
    assert build_history.build_records(tiny_bench, "linear_probe", "all", (0, 2)) == 2
    assert build_history.build_records(tiny_bench, "linear_probe", "all", (1, 2)) == 2
    # A later run (or a restarted shard) finds nothing left: finished pairs are skipped, so a stopped run resumes.
    assert build_history.build_records(tiny_bench, "linear_probe", "all") == 0
    assert not (root / "history.csv").exists()  # only --merge writes history.csv
    assert build_history.merge_parts(tiny_bench) == 4 and not list((root / "parts").glob("*.csv"))
    merged = _values(root / "history.csv")
    assert set(merged) == {(t, m, "linear_probe", 0) for t in ("d3", "d2-inv") for m in tiny_bench.models}
    assert all(0 <= v <= 100 for v in merged.values())

    # The same pairs measured in one run give the same values: shards change who measures, not what.
    (root / "history.csv").rename(tmp_path / "sharded.csv")
    assert build_history.build_records(tiny_bench, "linear_probe", "all") == 4
    build_history.merge_parts(tiny_bench)
    assert _values(root / "history.csv") == merged


def test_each_shard_holds_its_share_of_every_members_pairs(tiny_bench: bm.Benchmark) -> None:
    """A shard rule that handed a member's pairs all to one shard left the shard with v3's VGG16s running for
    hours after the other had ended."""
    pairs = {i: build_history.pending(tiny_bench, "linear_probe", "all", (i, 2))[1] for i in (0, 1)}
    for shard in pairs.values():
        assert Counter(model for _, model in shard) == dict.fromkeys(tiny_bench.models, 1)
    assert sorted((s.id, m) for shard in pairs.values() for s, m in shard) == sorted(
        (s.id, m) for s, m in build_history.pending(tiny_bench, "linear_probe", "all")[1])


def test_a_part_being_written_is_neither_written_by_a_second_builder_nor_merged(tiny_bench: bm.Benchmark) -> None:
    """Two builders of one kind and shard (other --models) would each rewrite the part with only their own records."""
    part = build_history.part_path(tiny_bench.root, "linear_probe", (0, 1))
    HistoryStore([_rec("d3", tiny_bench.models[0], 70.0, kind="linear_probe")]).save(part)
    with build_history.writing(part):  # a builder of linear_probe 0/1 is running
        with pytest.raises(ValueError, match="another builder is writing .*linear_probe-0of1.csv"):
            build_history.build_records(tiny_bench, "linear_probe", "all", models=tiny_bench.models[1:])
        with pytest.raises(ValueError, match="another builder is writing"):
            build_history.merge_parts(tiny_bench)
        assert not (tiny_bench.root / "history.csv").exists()
    # a builder of another part that has not finished its first pair: a lock and no part yet
    with build_history.writing(build_history.part_path(tiny_bench.root, "finetune", (1, 2))):
        with pytest.raises(ValueError, match="another builder is writing .*finetune-1of2.csv"):
            build_history.merge_parts(tiny_bench)
    # stopped before it wrote a record: its lock is left, and the merge folds the part and clears both
    assert build_history.merge_parts(tiny_bench) == 1 and not list((tiny_bench.root / "parts").iterdir())


def test_merge_refuses_records_of_tasks_or_models_the_benchmark_lacks(tiny_bench: bm.Benchmark) -> None:
    """Typos in a part (a model `mobilenet_v2`, a task `food_4way`) used to merge silently."""
    for bad, says in ((_rec("d3", "mobilenet_v2", 80.0), "models ['mobilenet_v2']"),
                      (_rec("food_4way", tiny_bench.models[0], 80.0), "tasks ['food_4way']")):
        part = build_history.part_path(tiny_bench.root, "finetune", (0, 1))
        HistoryStore([_rec("d3", tiny_bench.models[0], 70.0), bad]).save(part)
        with pytest.raises(ValueError, match=re.escape(f"names {says}")):
            build_history.merge_parts(tiny_bench)
        assert not (tiny_bench.root / "history.csv").exists() and part.exists()  # nothing written, nothing lost


@pytest.mark.integration
def test_a_stopped_run_resumes_where_it_stopped(tiny_bench: bm.Benchmark) -> None:
    first = tiny_bench.models[:1]
    assert build_history.build_records(tiny_bench, "linear_probe", "test", models=first) == 1  # "stopped" here
    assert build_history.build_records(tiny_bench, "linear_probe", "test") == 1  # only the missing pair


@pytest.mark.integration
def test_finetune_record_carries_its_provenance(tiny_bench: bm.Benchmark) -> None:
    assert build_history.build_records(tiny_bench, "finetune", "test", models=["tiny_resnet_fmnist"]) == 1
    build_history.merge_parts(tiny_bench)
    (record,) = HistoryStore.load(tiny_bench.root / "history.csv").records()
    recipe = tiny_bench.config.finetune
    assert record.key == ("d2-inv", "tiny_resnet_fmnist", "finetune", 0)
    assert (record.recipe, record.input_size, record.n_train, record.n_test) == (recipe.name, 32, 16, 24)
    assert record.epochs == math.ceil(recipe.steps * recipe.batch_size / 16) and record.device == "cpu"
    assert 50.0 <= record.value <= 100.0  # a pre-trained model beats chance (50%) on 2 classes


@pytest.mark.integration
def test_a_second_seed_measures_every_pair_again_as_records_of_its_own(tiny_bench: bm.Benchmark,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model, seeds_run = ["tiny_resnet_fmnist"], []
    finetune = build_history.finetune
    monkeypatch.setattr(build_history, "finetune", lambda *a: seeds_run.append(a[-1].seed) or finetune(*a))
    assert build_history.build_records(tiny_bench, "finetune", "test", models=model) == 1
    assert build_history.build_records(tiny_bench, "finetune", "test", models=model, seed=1) == 1
    assert build_history.build_records(tiny_bench, "finetune", "test", models=model, seed=1) == 0  # resumes
    build_history.merge_parts(tiny_bench)
    store = HistoryStore.load(tiny_bench.root / "history.csv")
    assert store.seeds("finetune") == [0, 1]
    assert seeds_run == [0, 1] and store.get("d2-inv", model[0], "finetune", 1).seed == 1  # trained with that seed


def test_a_recipe_change_measures_the_stale_pairs_again(tiny_bench: bm.Benchmark,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair measured under an earlier recipe used to count as done, so a changed recipe kept its stale records."""
    a, b = tiny_bench.models
    monkeypatch.setattr(build_history, "finetune", lambda entry, *_: (60.0 if entry.name == a else 70.0, 32, "cpu"))
    assert build_history.build_records(tiny_bench, "finetune", "test") == 2
    build_history.merge_parts(tiny_bench)
    csv_path = _write(tiny_bench.root.parent / "results.csv", f"task,model,accuracy\nd3,{a},91.5\n")
    assert build_history.import_results(tiny_bench, csv_path) == 1
    tiny_bench.config.finetune = dataclasses.replace(tiny_bench.config.finetune, name="finetune-next", lrs={a: 2e-5})
    monkeypatch.setattr(build_history, "finetune", lambda entry, *_: (80.0, 32, "cpu"))
    assert build_history.build_records(tiny_bench, "finetune", "test") == 2  # both stale pairs, not d3's import
    assert build_history.build_records(tiny_bench, "finetune", "all") == 1  # d3's other model; the import stands
    build_history.merge_parts(tiny_bench)
    store = HistoryStore.load(tiny_bench.root / "history.csv")
    assert {(r.task, r.model): (r.recipe, r.value) for r in store.records("finetune")} == {
        ("d2-inv", a): ("finetune-next", 80.0), ("d2-inv", b): ("finetune-next", 80.0),
        ("d3", a): ("imported", 91.5), ("d3", b): ("finetune-next", 80.0)}
    assert store.get("d2-inv", a, "finetune").lr == 2e-5


def test_merge_keeps_the_newest_part_s_record_of_a_pair(tiny_bench: bm.Benchmark) -> None:
    """A stale part left from an earlier build must not win over a newer one because its file name sorts later."""
    a = tiny_bench.models[0]
    stale = build_history.part_path(tiny_bench.root, "finetune", (5, 8))
    fresh = build_history.part_path(tiny_bench.root, "finetune", (1, 2))
    HistoryStore([_rec("d3", a, 10.0, recipe="old")]).save(stale)
    HistoryStore([_rec("d3", a, 90.0, recipe="new")]).save(fresh)
    os.utime(stale, (1_000_000, 1_000_000))
    os.utime(fresh, (2_000_000, 2_000_000))
    assert build_history.merge_parts(tiny_bench) == 1
    assert HistoryStore.load(tiny_bench.root / "history.csv").get("d3", a, "finetune").recipe == "new"


def test_plan_counts_the_pairs_left_and_their_hours_from_the_recipes_records(tiny_bench: bm.Benchmark) -> None:
    a, b = tiny_bench.models
    name, device = tiny_bench.config.finetune.name, str(features.best_device())  # seconds count on their device kind
    built = {"device": device, "source": "data/build_history.py"}
    HistoryStore([_rec("d3", a, 80.0, recipe=name, wall_s=1800.0, **built),
                  _rec("d3", b, 70.0, recipe="an-older-recipe", wall_s=60.0, **built),
                  _rec("d2-inv", b, 75.0, recipe=name, wall_s=5.0, device=device, source="imported from x.csv")]
                 ).save(tiny_bench.root / "history.csv")
    lines = build_history.plan(tiny_bench, "finetune", "all")
    assert lines[0].endswith(": 2 pairs left")  # b's d3 record is of another recipe: measured again
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert rows == {a: ["1", "1800.0", "0.50"], b: ["1", "?", "?"]}  # an import's seconds are another machine's
    assert lines[-1].startswith("total: 0.50 hours of one builder, plus 1 member(s) with no record yet")


def test_stats_hold_prototypes_and_summaries_of_every_training_part(tiny_bench: bm.Benchmark) -> None:
    build_history.build_stats(tiny_bench)
    with safe_open(tiny_bench.root / "stats.safetensors", "pt") as f:
        assert f.metadata()["general_encoder"] == "tiny_resnet_fmnist"
        assert f.get_tensor("d3/prototypes").shape == (3, 96)
        assert f.get_tensor("d2-inv/summary").shape == (192,)
    with safe_open(tiny_bench.root / "model_stats.safetensors", "pt") as f:
        assert f.get_tensor("d2-inv/tiny_convnext_amnist").shape == (2, 64)
    prototypes, summary = tiny_bench.task_stats()["d3"]
    assert summary.shape == (192,) and torch.allclose(summary[:96], prototypes.mean(0))
    # from the training part's own features: the cache that --kind logme and ranker.evaluate read
    part = bm.task_parts(next(t for t in tiny_bench.config.tasks if t.id == "d3"), tiny_bench.config)[0]
    own = features.extract(zoo.load_extractor(tiny_bench.entries["tiny_resnet_fmnist"]), part.task, progress=False)
    torch.testing.assert_close(prototypes, stats.class_prototypes(own, torch.as_tensor(part.labels), 3))
    # a config naming another general encoder than the one the file was built with is refused
    other = dataclasses.replace(tiny_bench.config, general_encoder="tiny_convnext_amnist")
    with pytest.raises(ValueError, match="holds tiny_resnet_fmnist's statistics.*--kind stats"):
        dataclasses.replace(tiny_bench, config=other).task_stats()


def test_proxy_labels_rank_the_whole_zoo_on_every_task(tiny_bench: bm.Benchmark) -> None:
    assert build_history.build_proxy(tiny_bench, "all") == 4
    build_history.merge_parts(tiny_bench)
    tasks, models, values = HistoryStore.load(tiny_bench.root / "history.csv").matrix("proxy")
    assert sorted(tasks) == ["d2-inv", "d3"] and models == tiny_bench.models
    # Two models: each estimator puts one at 0 and the other at 1 (or both at 0.5), so a task's proxies sum to 1.
    np.testing.assert_allclose(values.sum(1), 1.0)
    assert build_history.build_proxy(tiny_bench, "all") == 0  # resumes


def test_cli_reports_bad_input_in_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["build_history", "--kind", "finetune", "--models", "resnet9000"])
    with pytest.raises(SystemExit) as stop:
        build_history.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "resnet9000" in err
    monkeypatch.setattr("sys.argv", ["build_history", "--kind", "stats", "--plan"])  # a plan, never a stats build
    with pytest.raises(SystemExit) as stop:
        build_history.main()
    assert stop.value.code == 2 and "--plan estimates" in capsys.readouterr().err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_imported_results_become_finetune_records_that_the_builder_skips(tiny_bench: bm.Benchmark,
                                                                         tmp_path: Path) -> None:
    a, b = tiny_bench.models
    csv_path = _write(tmp_path / "results.csv", f"task,model,accuracy,seed,input_size\nd3,{a},91.5,,64\n"
                                                f"d3,{b},80,1,\nd2-inv,{a},75.25,,\n")
    assert build_history.import_results(tiny_bench, csv_path) == 3
    assert build_history.build_records(tiny_bench, "finetune", "all", models=[a]) == 0  # both pairs imported
    build_history.merge_parts(tiny_bench)
    store = HistoryStore.load(tiny_bench.root / "history.csv")
    record = store.get("d3", a, "finetune")
    assert (record.value, record.seed, record.input_size, record.recipe) == (91.5, 0, 64, "imported")
    assert record.source == "imported from results.csv" and store.get("d3", b, "finetune", 1).value == 80.0


@pytest.mark.parametrize(("text", "says"), [
    ("task,model\nd3,M0\n", "lacks column(s) ['accuracy']"),
    ("task,model,accuracy,colour\nd3,M0,90,red\n", "column(s) ['colour'] that an import does not take"),
    ("task,model,accuracy\nd3,mobilenet_v2,90\n", "line 2: model 'mobilenet_v2' is not in"),
    ("task,model,accuracy\nfood_4way,M0,90\n", "line 2: task 'food_4way' is not in"),
    ("task,model,accuracy\nd3,M0,ninety\n", "line 2: accuracy holds 'ninety', not a number"),
    ("task,model,accuracy\nd3,M0,0.9\nd3,M1,190\n", "line 3: accuracy 190 is not a percentage"),
    ("task,model,accuracy,seed\nd3,M0,90,one\n", "line 2: column seed holds 'one', not an integer"),
    ("task,model,accuracy\nd3,M0,90\nd3,M0,91\n", "line 3: (d3, M0, seed 0) is twice in the file"),
])
def test_a_bad_import_says_what_is_wrong_in_one_line_and_writes_nothing(tiny_bench: bm.Benchmark, tmp_path: Path,
                                                                       text: str, says: str) -> None:
    for i, model in enumerate(tiny_bench.models):
        text, says = text.replace(f"M{i}", model), says.replace(f"M{i}", model)
    with pytest.raises(ValueError) as err:
        build_history.import_results(tiny_bench, _write(tmp_path / "results.csv", text))
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tiny_bench.root / "parts").exists()


def test_an_import_refuses_a_pair_already_measured(tiny_bench: bm.Benchmark, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_bench.models[0]
    csv_path = _write(tmp_path / "results.csv", f"task,model,accuracy\nd3,{model},90\n")
    monkeypatch.setattr("sys.argv", ["build_history", "--benchmark", str(tiny_bench.root), "--import", str(csv_path)])
    build_history.main()
    assert capsys.readouterr().out.startswith("1 imported")
    with pytest.raises(SystemExit) as stop:
        build_history.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "already in the history" in err and err.count("\n") == 1
