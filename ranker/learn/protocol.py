"""What every learned ranker offers serving, export and evaluation: one typed protocol, and a fit's result.

A ranker kind (``modelspider``, ``fennec``; the registry is :mod:`ranker.learn.rankers`) is a class that fits
itself to a run's episodes, loads itself from an export's weights, and scores a batch of tasks from their
general-encoder class prototypes. rank.py's pipeline, ``ranker.serve.export`` and ``ranker.evaluate`` call only
what :class:`LearnedRanker` names, so they hold no branch on the kind.

Shapes: B tasks, C classes (padded), D the general encoder's width, M zoo models, K scored models, D_max the
widest member's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from ranker.learn.config import RunConfig
from ranker.learn.modelspider import RankerDims

if TYPE_CHECKING:  # Lightning comes with the episodes: serving a checkpoint never imports them
    from ranker.learn.episodes import EpisodeDataModule


class LearnedRanker(Protocol):
    """A fitted ranker, in eval mode, as serving, export and evaluation call it."""

    dims: RankerDims  # the zoo and general encoder it scores for
    reads_own_features: bool  # False: re-ranking re-scores nothing (``rerank`` is ``forward``), so a caller
    # embeds the data with the top models only when it blends in their own evidence itself

    def __call__(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor | None = None,
                 specific_mask: torch.Tensor | None = None, models: torch.Tensor | None = None,
                 evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, K]`` (higher = better) of the models ``models`` (``[K]`` zoo indices; None: all M).

        Args:
            prototypes: general-encoder class prototypes ``[B, C, D]``; ``class_mask`` ``[B, C]`` True for real
                classes.
            specific: the scored models' own class prototypes ``[B, K, C, D_max]``, or None.
            specific_mask: ``[B, K]``, True where ``specific`` holds model k's prototypes for task b.
            evidence: ``[B, K]`` LogME of each model's own features, read where ``specific_mask`` is True.
        """
        ...

    def rerank(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor, k: int,
               evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Final scores ``[B, M]`` after the top ``k`` by the plain score are re-scored with ``specific``
        ``[B, M, C, D_max]`` and ``evidence`` ``[B, M]`` (only those k entries are read) and keep the top places."""
        ...

    def recall_keys(self) -> torch.Tensor:
        """``[M, E]`` one vector per model; a query's inner product with them approximates its scores."""
        ...

    def recall_query(self, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """``[B, E]`` query vectors of the tasks for a maximum-inner-product search of ``recall_keys``."""
        ...

    def with_cold_models(self, trained: torch.Tensor, cold: torch.Tensor, cold_dims: list[int]) -> LearnedRanker:
        """This ranker extended by models it never trained on, appended after its M models, nothing retrained.

        Args:
            trained: ``[M, F]`` archi2vec vectors of its models, in its order.
            cold: ``[N, F]`` those of the new models.
            cold_dims: the new models' feature widths.
        """
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights an export saves and ``load`` reads back."""
        ...

    @classmethod
    def load(cls, state: dict[str, torch.Tensor], dims: RankerDims, run: RunConfig) -> LearnedRanker:
        """The ranker (eval mode) whose ``state_dict()`` is ``state``, for ``dims`` and its training config."""
        ...

    @classmethod
    def fit(cls, cfg: RunConfig, data: EpisodeDataModule) -> Fitted | None:
        """Fits a ranker of this kind to ``data``'s episodes (set up) with run config ``cfg``; None in the
        processes of a distributed run other than rank 0, which exports."""
        ...


@dataclass
class Fitted:
    """A finished fit: the ranker (CPU, eval mode) and what was chosen for it."""

    net: LearnedRanker
    rerank_k: int  # the re-ranking depth rank.py uses by default (0: re-rank nothing)
    sweep: list[float]  # validation tau (rank=None) by re-ranking depth k = 0..M that chose it (one entry: k=0)
    best_score: float  # the best validation weighted tau
    best_path: str  # its Lightning checkpoint ("" for a ranker fitted in memory)
    spider_factor: float = 1.0  # the factor applied to a calibrated Model Spider's learned scale (1: none)
    chosen_by: str = "validation"  # "validation", or "grouped cross-validation over <groups>"
    report: str = ""  # what the fit chose, in words: train.py prints it
