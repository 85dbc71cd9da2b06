"""The scaffold: a team's own folders and zoo become a benchmark.yaml that every later step loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import scaffold
from ranker.tasks import benchmark as bm
from ranker.zoo import manifest as zoo


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """``root/<class>/<i>.png``: small grey squares, a different shade per class and image."""
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((12, 12), 20 * c + i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folders_become_tasks_with_roles_groups_and_half_splits(tmp_path: Path, capsys) -> None:
    a = image_folder(tmp_path / "Cats & Dogs", {"cat": 4, "dog": 6})
    b = image_folder(tmp_path / "cars", {"red": 4, "blue": 4, "green": 4})
    c = image_folder(tmp_path / "more" / "cars", {"x": 2, "y": 2})
    d = image_folder(tmp_path / "new", {"p": 4, "q": 4})
    out = tmp_path / "mybench"
    assert scaffold.main([str(out), "--manifest", str(zoo.DEFAULT_MANIFEST), "--train", str(a), str(b), str(c),
                          "--test", str(d), "--group", "vehicles", str(b), str(c)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out / 'benchmark.yaml'}: 3 training and 1 test tasks in 3 groups")
    assert f"--benchmark {out} --kind stats" in said
    bench = bm.load_benchmark(out)
    assert [(t.id, t.role, t.group_name) for t in bench.config.tasks] == [
        ("cats-dogs", "train", "cats-dogs"), ("cars", "train", "vehicles"), ("cars-2", "train", "vehicles"),
        ("new", "test", "new")]
    assert bench.models == [e.name for e in zoo.load_manifest(zoo.DEFAULT_MANIFEST).models]
    assert bench.config.general_encoder == bench.models[0] and bench.config.finetune.max_input_size == 0
    train, test = bm.task_parts(bench.config.tasks[0], bench.config)
    assert train.class_names == ("cat", "dog") and list(np.bincount(train.labels)) == [2, 3]
    assert list(np.bincount(test.labels)) == [2, 3]  # the rest of each class: nothing is left unused


@pytest.mark.parametrize(("args", "says"), [
    (["--train", "{missing}"], "does not exist"),
    (["--train", "{one}"], "has only one class ('only')"),
    (["--train", "{tiny}"], "class 'b' has 1 image; a task needs at least 2 per class"),
    (["--train", "{ok}", "{ok}"], "a folder is given twice"),
    (["--test", "{ok}"], "give at least one --train folder"),
    (["--train", "{ok}", "--general-encoder", "resnet9000"], "general encoder 'resnet9000' is not in"),
    (["--train", "{ok}", "--group", "g", "{one}"], "--group names folder(s)"),
    (["--train", "{ok}", "--manifest", "{missing}"], "zoo manifest"),
])
def test_bad_folders_end_in_one_line_and_write_nothing(tmp_path: Path, capsys, args: list[str], says: str) -> None:
    folders = {"missing": tmp_path / "nowhere", "one": image_folder(tmp_path / "one", {"only": 3}),
               "tiny": image_folder(tmp_path / "tiny", {"a": 3, "b": 1}),
               "ok": image_folder(tmp_path / "ok", {"a": 3, "b": 3})}
    out = tmp_path / "bench"
    argv = [str(out), "--manifest", str(zoo.DEFAULT_MANIFEST), *(a.format(**folders) for a in args)]
    assert scaffold.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not out.exists()


def test_an_existing_benchmark_is_not_overwritten(tmp_path: Path, capsys) -> None:
    ok = image_folder(tmp_path / "ok", {"a": 3, "b": 3})
    argv = [str(tmp_path / "bench"), "--manifest", str(zoo.DEFAULT_MANIFEST), "--train", str(ok)]
    assert scaffold.main(argv) == 0
    before = (tmp_path / "bench" / "benchmark.yaml").read_bytes()
    assert scaffold.main(argv) == 2 and "exists" in capsys.readouterr().err
    assert (tmp_path / "bench" / "benchmark.yaml").read_bytes() == before
