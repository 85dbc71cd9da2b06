"""The training config (ranker/learn/config.py): every shipped train YAML matches its dataclasses."""

from __future__ import annotations

import pytest

from ranker.learn.config import CONFIGS_DIR, RunConfig, learning_yaml, load_run_config


def test_every_shipped_train_yaml_matches_the_config_classes() -> None:
    for path in sorted((CONFIGS_DIR / "train").glob("*.yaml")):
        cfg = load_run_config(path, ["model.dim=32", "trainer.max_epochs=2"])
        assert isinstance(cfg, RunConfig) and cfg.model.dim == 32 and cfg.trainer.max_epochs == 2
    with pytest.raises(Exception, match="nonexistent"):
        load_run_config(overrides=["model.nonexistent=1"])


def test_learning_yaml_ignores_where_a_run_is_written_and_keeps_what_it_learns() -> None:
    """The cache key of kept folds and inner fits: renaming a run must not retrain them, a new seed must."""
    base = load_run_config()
    moved = load_run_config(overrides=["name=elsewhere", "out_dir=/tmp/x", "export_dir=/tmp/y", "overwrite=true",
                                       "ckpt_path=/tmp/last.ckpt"])
    assert learning_yaml(moved) == learning_yaml(base)
    assert learning_yaml(load_run_config(overrides=["seed=1"])) != learning_yaml(base)
    assert learning_yaml(load_run_config(overrides=["model.dim=32"])) != learning_yaml(base)
    assert moved.name == "elsewhere"  # the config itself is left as it was
