"""Model Spider's ranker as a registered kind (``modelspider`` in :mod:`ranker.learn.rankers`).

The network is :class:`ranker.learn.modelspider.Ranker`; this class adds loading an export's weights (plain torch,
so serving a checkpoint never imports Lightning) and fitting (:func:`ranker.learn.selection.fit`, imported only
when a run fits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ranker.learn.config import RunConfig
from ranker.learn.modelspider import Ranker, RankerDims
from ranker.learn.protocol import Fitted

if TYPE_CHECKING:
    from ranker.learn.episodes import EpisodeDataModule


class ModelSpider(Ranker):
    """:class:`~ranker.learn.modelspider.Ranker` with the registry's ``load`` and ``fit``."""

    @classmethod
    def load(cls, state: dict[str, torch.Tensor], dims: RankerDims, run: RunConfig) -> ModelSpider:
        """The ranker (eval mode) of shape ``dims`` and ``run.model`` whose ``state_dict()`` is ``state``."""
        net = cls(dims, run.model)
        net.load_state_dict(state)
        return net.eval()

    @classmethod
    def fit(cls, cfg: RunConfig, data: EpisodeDataModule) -> Fitted | None:
        """Trains and chooses the Model Spider factor and k (:func:`ranker.learn.selection.fit`)."""
        from ranker.learn import selection  # Lightning: only a fit needs it

        return selection.fit(cls, cfg, data)
