"""The registry of learned rankers: a run config's ``ranker`` names one, and everything else goes through it.

Each entry is ``"module:Class"`` of a class that implements :class:`ranker.learn.protocol.LearnedRanker`; it is
imported only when asked for, so loading a Model Spider checkpoint does not import Fennec's Lightning. Adding a
ranker is one module with such a class plus one entry here.

Example:
    >>> from ranker.learn import rankers
    >>> list(rankers.RANKERS)
    ['modelspider', 'fennec']
    >>> rankers.get("modelspider").__name__
    'ModelSpider'
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import sys
from typing import TYPE_CHECKING

from ranker.learn.config import RunConfig
from ranker.learn.protocol import Fitted, LearnedRanker

if TYPE_CHECKING:
    from ranker.learn.episodes import EpisodeDataModule

RANKERS: dict[str, str] = {
    "modelspider": "ranker.learn.spider:ModelSpider",  # Ranker v2: Model Spider's tokens, calibrated
    "fennec": "ranker.learn.fennec:FennecScorer",  # models and tasks in one latent space (Bai et al.)
}

FITTED_IN_EVALUATION = ("fennec",)
"""Rankers that ``ranker.evaluate`` fits on every split beside the checkpoint it evaluates (seconds on a CPU)."""


def get(name: str) -> type[LearnedRanker]:
    """The ranker class registered under ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name not in RANKERS:
        raise ValueError(f"ranker={name}: use one of {', '.join(RANKERS)}")
    module, attribute = RANKERS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def fit_again(run: RunConfig, benchmark: str, out_dir: str, name: str, tasks: list[str] | None = None,
              seed: int | None = None) -> tuple[Fitted, EpisodeDataModule]:
    """``run`` (an export's training config) fitted again by its ranker, on ``benchmark``'s ``tasks`` (None: its
    training-role tasks; ``data.val_tasks`` among them validate) with ``seed`` (None: the run's), into
    ``<out_dir>/<name>/``; Lightning's output goes to stderr, so a caller's stdout stays a report. Returns the
    result and its data (``val_ids``: the validation tasks used): how evaluation retrains a ranker on a fold or
    another seed.

    Raises:
        ValueError: none of ``data.val_tasks`` is among ``tasks``, or an unknown ranker.
    """
    from ranker.learn.episodes import EpisodeDataModule  # Lightning: serving imports this module without it

    cfg = copy.deepcopy(run)
    cfg.data.benchmark, cfg.name, cfg.out_dir, cfg.ckpt_path = benchmark, name, out_dir, None
    cfg.seed = cfg.seed if seed is None else seed
    ranker = get(cfg.ranker)
    data = EpisodeDataModule(cfg, tasks)
    data.setup()
    with contextlib.redirect_stdout(sys.stderr):
        return ranker.fit(cfg, data), data
