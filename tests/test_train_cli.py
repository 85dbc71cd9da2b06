"""train.py as a user meets it: the training guide's commands as written, bad invocations, folders it must not touch,
and runs killed at random points that, rerun, export what an uninterrupted run exports."""

from __future__ import annotations

import hashlib
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import train
from ranker.learn import episodes
from ranker.learn.config import load_run_config
from ranker.learn.protocol import Fitted
from ranker.serve import export

ROOT = Path(train.__file__).resolve().parent
TINY = ["trainer.max_epochs=3"]  # appended last, so it wins over a command's own epochs


def run_train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def readme_train_commands() -> list[list[str]]:
    """The arguments of every ``train.py`` command in the training guide's code blocks, in order."""
    commands = []
    for line in (ROOT / "docs" / "training.md").read_text().splitlines():
        match = re.match(r"\.venv/bin/python train\.py(.*?)(#|$)", line.strip())
        if match:
            commands.append(shlex.split(match.group(1)))
    return commands


def folder_digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.mark.integration
def test_the_documented_train_commands_run_as_written(tmp_path: Path) -> None:
    """Run from an empty folder (so runs/ lands there) with tiny epochs; the resume command finds the first run."""
    commands = readme_train_commands()
    assert len(commands) == 4 and any("ckpt_path" in a for a in commands[2])
    for args in commands:
        run = run_train([*args, f"export_dir={tmp_path}/ckpt", *TINY], tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stderr.count("GPU available") <= 1  # the main fit's; inner fits (one per group) stay quiet
    saved = [p.relative_to(tmp_path / "runs") for p in (tmp_path / "runs").rglob("last.ckpt")]
    assert saved and all("inner" not in p.parts for p in saved)  # the main fits resume; inner fits are never resumed
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["small", "v3", "v3-fennec"]
    assert export.load(tmp_path / "ckpt" / "small").config.run.optim.loss == "listnet"
    assert export.load(tmp_path / "ckpt" / "v3-fennec").config.run.ranker == "fennec"


@pytest.mark.integration
def test_bad_invocations_end_in_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train.main(["--help"]) == 0
    assert "Examples" in capsys.readouterr().out
    out = [f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt"]
    for args, says in ((["optim.loss=nope"], "unknown loss 'nope'"),
                       (["trainer.max_epochs=many"], "trainer.max_epochs"),
                       (["trainer.max_epochs=-1"], "give 1 or more"),  # was an OverflowError traceback
                       (["ckpt_path=nowhere.ckpt"], "is not a file"),
                       (["ranker=lightgbm"], "use one of modelspider, fennec")):
        assert train.main(out + args) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.integration
def test_the_shipped_checkpoint_and_an_earlier_run_are_never_overwritten(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    assert load_run_config().name != "v3-default"
    shipped = folder_digest(export.DEFAULT_CHECKPOINT)
    assert train.main([f"out_dir={tmp_path}/runs", "name=v3-default", *TINY]) == 2
    assert "checkpoints/v3-default exists" in capsys.readouterr().err
    assert folder_digest(export.DEFAULT_CHECKPOINT) == shipped and not (tmp_path / "runs").exists()

    args = [f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt", "name=r"]
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "config.yaml").write_text("an earlier run's\n")
    assert train.main(args + TINY) == 2
    assert "runs/r exists" in capsys.readouterr().err
    assert (tmp_path / "runs" / "r" / "config.yaml").read_text() == "an earlier run's\n"


@pytest.mark.integration
def test_last_checkpoint_holds_the_last_epoch_when_it_is_no_validation_epoch(tmp_path: Path) -> None:
    """Validation every 5 epochs, 7 epochs: last.ckpt must hold epoch 7 (index 6), not the best epoch 5; with 3
    epochs (below the interval) validation still runs once, so a best checkpoint exists."""
    for epochs in (7, 3):
        cfg = load_run_config(overrides=[f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt",
                                         f"name=e{epochs}", f"trainer.max_epochs={epochs}", "data.benchmark=offline"])
        data = episodes.EpisodeDataModule(cfg)
        data.setup()
        train.fit(cfg, data)
        checkpoints = tmp_path / "runs" / f"e{epochs}" / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
        assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == epochs - 1


def epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]


def kill_and_resume(args: list[str], cwd: Path, epochs: int, kills: int, seed: int) -> list[int]:
    """Starts train.py and SIGKILLs it at a random point of its training (0 to 0.1 s after ``last.ckpt`` reaches the
    next of ``kills`` random epochs; at once, during start-up, when it is there already), then reruns it from
    ``last.ckpt`` (or afresh, when a kill came before the first one), ``kills`` times; the last rerun ends by itself.
    Returns the epoch each rerun resumed from.
    """
    rng, resumed = random.Random(seed), []
    targets = sorted(rng.sample(range(epochs - 1), kills))
    last = cwd / "runs" / "k" / "checkpoints" / "last.ckpt"
    for attempt in range(kills + 1):
        extra = [f"ckpt_path={last}"] if last.exists() else ["overwrite=true"]
        if attempt:
            resumed.append(epoch_of(last) if last.exists() else -1)
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, *extra], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt == kills:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]
            return resumed
        while proc.poll() is None and not (last.exists() and epoch_of(last) >= targets[attempt]):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.1))
        assert proc.poll() is None, "the run ended before its kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    raise AssertionError("unreachable")


def check_kills(tmp_path: Path, kills: int) -> None:
    epochs = 60  # room for 10 kills at distinct epochs
    args = ["name=k", f"trainer.max_epochs={epochs}", "data.benchmark=offline"]  # 4 groups: the fewest inner fits
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    whole = run_train([*args, f"export_dir={tmp_path}/whole/ckpt"], tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed = kill_and_resume([*args, f"export_dir={tmp_path}/killed/ckpt"], tmp_path / "killed", epochs, kills,
                              kills)
    print(f"{kills} kill(s); the reruns resumed from epochs {resumed}")
    assert len(resumed) == kills and all(epoch >= 0 for epoch in resumed)
    weights = []
    for name in ("whole", "killed"):
        last = torch.load(tmp_path / name / "runs" / "k" / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["epoch"] == epochs - 1
        weights.append(last["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same steps, bit for bit
    expected = load_file(tmp_path / "whole" / "ckpt" / "k" / "model.safetensors")
    got = load_file(tmp_path / "killed" / "ckpt" / "k" / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    whole_k = export.load(tmp_path / "whole" / "ckpt" / "k").config.rerank_k
    assert export.load(tmp_path / "killed" / "ckpt" / "k").config.rerank_k == whole_k


@pytest.mark.integration
def test_a_killed_training_run_resumes_to_the_uninterrupted_export(tmp_path: Path) -> None:
    check_kills(tmp_path, kills=2)


@pytest.mark.integration
@pytest.mark.slow
def test_ten_random_kills_of_training_lose_nothing(tmp_path: Path) -> None:
    start = time.perf_counter()
    check_kills(tmp_path, kills=10)
    print(f"10 kills and resumes: {time.perf_counter() - start:.0f} s")


def test_a_history_without_logme_is_said_in_one_warning() -> None:
    """Re-ranking weighs each model's LogME; a history without it trains a ranker whose k adds nothing."""
    tasks = [SimpleNamespace(id=t, group_name=g) for t, g in (("a", "g1"), ("b", "g2"), ("c", "g2"))]
    bench = SimpleNamespace(config=SimpleNamespace(tasks=tasks, val_tasks=[]), argument="teams/bench")

    def episode(task: str, kind: str, logme: float) -> episodes.Episode:
        zero = torch.zeros(2)
        return episodes.Episode(task, kind, zero, zero, zero.bool(), zero, torch.tensor([logme, float("nan")]))

    nan = float("nan")
    data = SimpleNamespace(bench=bench, cfg=SimpleNamespace(val_tasks=[]), val_episodes=[episode("c", "finetune", nan)],
                           train_episodes=[episode("a", "finetune", nan), episode("b", "linear_probe", nan)])
    line, warning = train.history_summary(data)
    assert line == ("history: 3 tasks (2 training, 1 validation: the last training task of its largest groups) in 2 "
                    "groups; ground truth finetune on 2, linear_probe on 1; logme evidence on 0")
    assert "no task of benchmark teams/bench has logme" in warning and "--benchmark teams/bench --kind logme" in warning
    data.val_episodes = [episode("c", "finetune", 1.0)]
    assert train.history_summary(data)[1] == ""


@pytest.mark.parametrize("args, needle", [
    (["model.nonexistent=1"], "nonexistent"),
    (["model.dim=wide"], "dim"),
    (["data.val_tasks=[digits-10way]"], "not training-role tasks"),
    (["data.benchmark=nope"], "no benchmark 'nope'"),
])
@pytest.mark.integration
def test_train_cli_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, capsys) -> None:
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: ") and needle in err and "\n" not in err


def test_a_fit_that_leaves_only_the_prior_says_so() -> None:
    def fitted(k: int, factor: float) -> Fitted:
        return Fitted(net=None, rerank_k=k, sweep=[0.5], best_score=0.5, best_path="", spider_factor=factor)

    note = train.prior_only(fitted(0, 0.0), 9)
    assert "prior term alone" in note and "its 9 tasks" in note and "\n" not in note
    assert train.prior_only(fitted(3, 0.0), 9) == train.prior_only(fitted(0, 0.25), 9) == ""
