"""The ranker registry: a third ranker is one class plus one entry, and train.py, export and rank.py's pipeline
serve it with no change of theirs; the shipped kinds are found by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import train
from ranker.learn import rankers
from ranker.learn.config import RunConfig
from ranker.learn.episodes import EpisodeDataModule
from ranker.learn.modelspider import RankerDims
from ranker.learn.protocol import Fitted
from ranker.serve import export
from ranker.serve.pipeline import Pipeline


class MeanAccuracy(nn.Module):
    """A toy ranker: every task gets the same scores, each model's mean target over the training episodes."""

    reads_own_features = False

    def __init__(self, dims: RankerDims, prior: torch.Tensor) -> None:
        super().__init__()
        self.dims = dims
        self.prior = nn.Parameter(prior.float().clone())

    def forward(self, prototypes, class_mask, specific=None, specific_mask=None, models=None, evidence=None):
        scores = self.prior.detach().expand(len(prototypes), -1)
        return scores if models is None else scores[:, models]

    def rerank(self, prototypes, class_mask, specific, k, evidence=None):
        return self(prototypes, class_mask)

    def recall_keys(self):
        return self.prior.detach()[:, None]

    def recall_query(self, prototypes, class_mask):
        return torch.ones(len(prototypes), 1)

    def with_cold_models(self, trained, cold, cold_dims):
        dims = RankerDims(self.dims.num_models + len(cold), self.dims.general_dim, self.dims.model_dims + cold_dims)
        return MeanAccuracy(dims, torch.cat([self.prior.detach(), self.prior.detach().mean().repeat(len(cold))]))

    @classmethod
    def load(cls, state, dims, run):
        return cls(dims, state["prior"]).eval()

    @classmethod
    def fit(cls, cfg: RunConfig, data: EpisodeDataModule) -> Fitted:
        prior = torch.stack([e.target for e in data.train_episodes]).nanmean(0).nan_to_num(0.0)
        return Fitted(cls(data.dims, prior).eval(), 0, [0.0], 0.0, "", report="mean accuracy")


@pytest.mark.integration
def test_a_registered_toy_ranker_is_fitted_exported_loaded_and_served(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(rankers.RANKERS, "toy", f"{__name__}:MeanAccuracy")
    assert train.main(["ranker=toy", "name=toy", f"export_dir={tmp_path}", f"out_dir={tmp_path}/runs"]) == 0
    assert "mean accuracy; exported" in capsys.readouterr().out
    exported = export.load(tmp_path / "toy")
    assert isinstance(exported.net, MeanAccuracy) and exported.config.run.ranker == "toy"
    data = EpisodeDataModule(exported.config.run)
    data.setup()
    prior = torch.stack([e.target for e in data.train_episodes]).nanmean(0).nan_to_num(0.0)
    torch.testing.assert_close(exported.net.prior.detach(), prior)

    stats = data.bench.task_stats()[data.val_ids[0]][0]  # one "image" per class: the prototypes themselves
    pipe = Pipeline(exported)
    ranking = pipe.rank_features("val", stats, np.arange(len(stats)))
    order = [exported.config.models[i] for i in prior.argsort(descending=True, stable=True)]
    assert [r.model for r in ranking.ranking] == order and ranking.k == 0
    assert [r.score for r in ranking.ranking] == pytest.approx(sorted(prior.tolist(), reverse=True))
    with pytest.raises(ValueError, match="a toy checkpoint scores from the general encoder alone"):
        Pipeline(exported, k=3)


def test_the_shipped_kinds_are_found_by_name_and_an_unknown_one_lists_them() -> None:
    assert [rankers.get(name).__name__ for name in rankers.RANKERS] == ["ModelSpider", "FennecScorer"]
    assert set(rankers.FITTED_IN_EVALUATION) <= set(rankers.RANKERS)
    with pytest.raises(ValueError, match="use one of modelspider, fennec"):
        rankers.get("lightgbm")
