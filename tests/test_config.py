"""The training config (ranker/learn/config.py): every shipped train YAML matches its dataclasses."""

from __future__ import annotations

import pytest

from ranker.learn.config import CONFIGS_DIR, RunConfig, load_run_config


def test_every_shipped_train_yaml_matches_the_config_classes() -> None:
    for path in sorted((CONFIGS_DIR / "train").glob("*.yaml")):
        cfg = load_run_config(path, ["model.dim=32", "trainer.max_epochs=2"])
        assert isinstance(cfg, RunConfig) and cfg.model.dim == 32 and cfg.trainer.max_epochs == 2
    with pytest.raises(Exception, match="nonexistent"):
        load_run_config(overrides=["model.nonexistent=1"])
