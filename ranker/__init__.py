"""Rank pre-trained image models for a new labelled image dataset.

The two calls below are the package's Python entry; each imports what it needs when called, so that importing
``ranker`` (and ``python rank.py --help``) stays instant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ranker.serve.pipeline import Pipeline

# Lightning advertises a cloud logger on every Trainer it builds: a history build builds one per pair.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda record: "litlogger" not in str(record.msg))


def load(checkpoint: str | Path | None = None) -> Pipeline:
    """The ranking pipeline of an exported ranker (None: the default benchmark's, ``export.DEFAULT_CHECKPOINT``) for
    the zoo it was trained on (its ``zoo.yaml``); ``.rank(task)`` ranks a dataset
    (``ranker.tasks.loaders.load_dataset``), as ``rank.py``.

    Raises:
        ranker.serve.export.ExportError: the folder is no export.
    """
    from ranker.serve import export
    from ranker.serve.pipeline import Pipeline

    return Pipeline(export.load(export.DEFAULT_CHECKPOINT if checkpoint is None else checkpoint))


def list_models() -> list[str]:
    """The names of the zoo the default checkpoint ranks (its ``zoo.yaml``), in zoo order (``rank.py --names``)."""
    from ranker.serve import export
    from ranker.zoo import manifest

    return manifest.list_models(export.DEFAULT_CHECKPOINT / "zoo.yaml")
