"""Fennec (Bai et al., arXiv 2403.06382): zoo models and tasks as vectors of one latent space, a model's fitness for a
task their dot product, fitted to the history with a listwise loss.

The model side is tied to archi2vec (:mod:`ranker.zoo.archi2vec`): model m's latent vector is
``v_m = free_m + A a_m``, a learned free part plus a linear map ``A`` of its fixed architecture vector ``a_m``, so
that models with similar architectures start from similar vectors and a model without history still has one
(``A a``, :meth:`Fennec.model_vector`). The task side is ``u = W unit(s) + b``, a linear map of the general
encoder's summary vector ``s`` (:func:`ranker.tasks.stats.summary_vector`, unit-normalized as Model Spider's
tokenizer normalizes prototypes). The score is ``u · v_m``: one dot product per model once ``u`` is computed.

The task map's bias ``b`` is the only bias: it adds ``b · v_m`` to model m on every task, a per-model prior in the
latent space, and unlike a free per-model scalar it is also defined for a cold-start model. ``A`` has no bias:
a vector added to every model would add ``u · c`` to all models of a task alike, which ranks nothing.

Training (:func:`fit_net`) is full-batch Adam in Lightning on the training tasks' episodes
(:func:`ranker.learn.episodes.load_episodes` targets, NaN masked) with a loss of :mod:`ranker.learn.losses`; the
weights of the epoch with the best validation weighted tau (rank=None, the main ranker's checkpoint monitor) are
kept, and training stops after ``patience`` epochs without a better one, since the wide task map overfits a few
dozen training tasks quickly.

Example:
    >>> from ranker.tasks import benchmark as bm
    >>> bench = bm.load_benchmark("offline")
    >>> net = fit_fennec(bench, bench.task_ids("train")[:-4], bench.task_ids("train")[-4:], seed=0)
    >>> net.score(summaries(bench, bench.task_ids("test"))).shape  # [T, M]
"""

from __future__ import annotations

import tempfile
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ranker.learn import losses
from ranker.learn.config import DataConfig, RunConfig
from ranker.learn.episodes import EpisodeDataModule, load_episodes
from ranker.learn.lit import quiet_lightning
from ranker.learn.metrics import WeightedTau
from ranker.learn.modelspider import RankerDims
from ranker.learn.protocol import Fitted
from ranker.tasks import benchmark as bm
from ranker.tasks import stats
from ranker.zoo.archi2vec import zoo_vectors

MODEL_SIDES = ("both", "free", "archi")  # v_m = free_m + A a_m; free_m alone; A a_m alone (the ablations)


class Fennec(nn.Module):
    """Scores ``[B, M]`` = task vectors ``[B, latent]`` @ model vectors ``[M, latent]``.T.

    Args:
        archi: the zoo's archi2vec vectors ``[M, archi_dim]`` in zoo order (kept as a buffer, not trained).
        task_dim: width of a task summary vector (twice the general encoder's width).
        latent: width of the shared space.
        model_side: which parts make a model vector, one of :data:`MODEL_SIDES`.
    """

    def __init__(self, archi: torch.Tensor, task_dim: int, latent: int, model_side: str = "both") -> None:
        super().__init__()
        if model_side not in MODEL_SIDES:
            raise ValueError(f"unknown model_side {model_side!r}; use one of {MODEL_SIDES}")
        num_models, archi_dim = archi.shape
        self.register_buffer("archi", archi.float().clone())
        self.task_map = nn.Linear(task_dim, latent)
        # Unit variance per latent coordinate, like the task map's output at init, so that neither factor of the
        # dot product starts near zero (both near zero is a saddle where the gradient of each vanishes).
        self.free = nn.Parameter(torch.randn(num_models, latent) * latent**-0.5) if model_side != "archi" else None
        self.archi_map = nn.Linear(archi_dim, latent, bias=False) if model_side != "free" else None

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Fennec:
        """The Fennec (eval mode) whose ``state_dict()`` is ``state``: shapes and model side are read from it."""
        side = "archi" if "free" not in state else "both" if "archi_map.weight" in state else "free"
        latent, task_dim = state["task_map.weight"].shape
        net = cls(state["archi"], task_dim, latent, side)
        net.load_state_dict(state)
        return net.eval()

    def model_vector(self, archi: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``[N, latent]`` of models without history from their archi2vec vectors ``[N, archi_dim]``:
        the free part is zero, so this is ``A a`` (the cold start)."""
        if self.archi_map is None:
            raise ValueError("this Fennec has no archi2vec map (model_side='free'): a new model has no vector")
        return self.archi_map(archi)

    def model_vectors(self) -> torch.Tensor:
        """The zoo's latent vectors ``[M, latent]``: ``free + A archi`` (or one part, per ``model_side``)."""
        if self.free is None:
            return self.model_vector(self.archi)
        return self.free if self.archi_map is None else self.free + self.model_vector(self.archi)

    def task_vector(self, summary: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``[B, latent]`` of tasks from their summary vectors ``[B, task_dim]``."""
        return self.task_map(F.normalize(summary, dim=-1, eps=1e-8))

    def score(self, summary: torch.Tensor) -> torch.Tensor:
        """Fitness of every zoo model for each task, ``[B, M]`` (higher = better)."""
        return self.task_vector(summary) @ self.model_vectors().T


def with_cold_models(net: Fennec, cold: torch.Tensor) -> Fennec:
    """``net`` extended by models it never trained on, appended after its M models (cold start): their
    archi2vec vectors ``cold`` ``[C, F]`` join the buffer and their free parts are zero, so each one's latent vector
    is ``A a`` (:meth:`Fennec.model_vector`). The trained models' vectors are unchanged; nothing is retrained."""
    if net.archi_map is None:
        raise ValueError("this Fennec has no archi2vec map (model_side='free'): a new model has no vector")
    state = {k: v.detach() for k, v in net.state_dict().items()}
    state["archi"] = torch.cat([net.archi, cold.float()])
    if net.free is not None:
        state["free"] = torch.cat([state["free"], torch.zeros(len(cold), state["free"].shape[1])])
    return Fennec.from_state(state)


class FennecScorer(nn.Module):
    """A :class:`Fennec` as a registered ranker (``fennec``, :class:`ranker.learn.protocol.LearnedRanker`): it
    scores from the general encoder's class prototypes (their summary vector, padded classes left out). Fennec runs
    no zoo model on the task, so PTM-specific prototypes and evidence are accepted and not read: ``rerank`` returns
    what ``forward`` does, and rank.py re-ranks a Fennec checkpoint only where it leans on the models' own LogME
    anyway (data far from the history).

    Args:
        net: a fitted Fennec.
        dims: the zoo's size and feature widths and the general encoder's width
            (:func:`ranker.learn.episodes.ranker_dims`).
    """

    reads_own_features = False

    def __init__(self, net: Fennec, dims: RankerDims) -> None:
        super().__init__()
        if net.archi.shape[0] != dims.num_models or net.task_map.in_features != 2 * dims.general_dim:
            raise ValueError(f"a Fennec of {net.archi.shape[0]} models and task width {net.task_map.in_features} "
                             f"does not fit dims {dims}")
        self.net, self.dims = net, dims

    def summary(self, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """Summary vectors ``[B, 2D]`` of class prototypes ``[B, C, D]`` over each task's real classes."""
        return torch.stack([stats.summary_vector(p[m]) for p, m in zip(prototypes, class_mask, strict=True)])

    def forward(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor | None = None,
                specific_mask: torch.Tensor | None = None, models: torch.Tensor | None = None,
                evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, K]`` of the models ``models`` (zoo indices; None: all, in zoo order)."""
        scores = self.net.score(self.summary(prototypes, class_mask))
        return scores if models is None else scores[:, models]

    @torch.no_grad()
    def rerank(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor, k: int,
               evidence: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` over the whole zoo, whatever ``k``: nothing re-scores a Fennec."""
        return self(prototypes, class_mask)

    def recall_keys(self) -> torch.Tensor:
        """``[M, latent]`` the models' latent vectors: the score is exactly a query's inner product with them."""
        return self.net.model_vectors().detach()

    def recall_query(self, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """``[B, latent]`` the tasks' latent vectors (maximum-inner-product search of ``recall_keys``)."""
        return self.net.task_vector(self.summary(prototypes, class_mask)).detach()

    def with_cold_models(self, trained: torch.Tensor, cold: torch.Tensor, cold_dims: list[int]) -> FennecScorer:
        """This scorer extended by models it never trained on (:func:`with_cold_models`; ``trained`` ``[M, F]`` is
        not needed: a cold model's vector is ``A a`` of its own archi2vec vector in ``cold`` ``[C, F]``)."""
        dims = RankerDims(self.dims.num_models + len(cold), self.dims.general_dim,
                          self.dims.model_dims + list(cold_dims))
        return FennecScorer(with_cold_models(self.net, cold), dims).eval()

    @classmethod
    def load(cls, state: dict[str, torch.Tensor], dims: RankerDims, run: RunConfig) -> FennecScorer:
        """The scorer whose ``state_dict()`` is ``state`` (an export's model.safetensors); shapes come from
        ``state``, so ``run`` is not read."""
        return cls(Fennec.from_state({k.removeprefix("net."): v for k, v in state.items()}), dims).eval()

    @classmethod
    def fit(cls, cfg: RunConfig, data: EpisodeDataModule) -> Fitted:
        """``train.py ranker=fennec``: :func:`fit_config` on ``data``'s episodes (k = 0: Fennec re-ranks nothing),
        with the validation weighted tau of the kept weights."""
        train, val = run_history(data)
        net = fit_config(cfg, data.bench, train, val)
        tau = WeightedTau("rank_none")
        with torch.no_grad():
            tau.update(net.score(val[0]), val[1])
        best = float(tau.compute())
        return Fitted(cls(net, data.dims).eval(), 0, [best], best, "",
                      report=f"Fennec: val wtau {best:.3f} at the kept epoch")


class FennecModule(L.LightningModule):
    """Trains a :class:`Fennec` on batches ``(summary [B, task_dim], target [B, M])``; logs ``val/wtau``."""

    def __init__(self, net: Fennec, loss: str, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net, self.loss, self.lr, self.weight_decay = net, losses.get(loss), lr, weight_decay
        self.wtau = WeightedTau("rank_none")

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        summary, target = batch
        loss = self.loss(self.net.score(summary), target)
        self.log("train/loss", loss, batch_size=len(summary))
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        summary, target = batch
        self.wtau.update(self.net.score(summary), target)
        self.log("val/wtau", self.wtau, batch_size=len(summary))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def fit_net(net: Fennec, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], *,
            loss: str = "listmle", lr: float = 1e-3, weight_decay: float = 1e-4, max_epochs: int = 300,
            patience: int = 50) -> Fennec:
    """Trains ``net`` in place on ``train`` = (summaries ``[T, task_dim]``, targets ``[T, M]`` NaN where
    unmeasured), one full batch per epoch on the CPU, validating every epoch on ``val``; returns it in eval
    mode with the weights of the best validation weighted tau (ties: the earliest epoch).

    Nothing here is random (full batches, no dropout): a seeded ``net`` gives a deterministic run.
    """
    module = FennecModule(net, loss, lr, weight_decay)
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning():  # a fit takes seconds; evaluation runs many
        best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val/wtau", mode="max",
                               enable_version_counter=False)
        trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                            callbacks=[best, EarlyStopping("val/wtau", mode="max", patience=patience)],
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            deterministic=True, default_root_dir=tmp)
        trainer.fit(module, DataLoader(TensorDataset(*train), batch_size=len(train[0])),
                    DataLoader(TensorDataset(*val), batch_size=len(val[0])))
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net.eval()


def summaries(bench: bm.Benchmark, task_ids: list[str]) -> torch.Tensor:
    """The tasks' general-encoder summary vectors ``[T, task_dim]`` float32, in ``task_ids`` order."""
    stats = bench.task_stats()
    return torch.stack([stats[t][1].float() for t in task_ids])


def _history(bench: bm.Benchmark, task_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summaries, targets) of ``task_ids``; a task's target is the main ranker's (``load_episodes`` with the
    default ``data.target_kinds``)."""
    episodes = load_episodes(bench, task_ids, DataConfig().target_kinds)
    return summaries(bench, task_ids), torch.stack([e.target for e in episodes])


def run_history(data: EpisodeDataModule) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                       tuple[torch.Tensor, torch.Tensor]]:
    """(train, val), each (summaries, targets), of a run's episodes: what ``train.py ranker=fennec`` fits to."""
    return tuple((summaries(data.bench, ids), torch.stack([e.target for e in episodes]))
                 for ids, episodes in ((data.train_ids, data.train_episodes), (data.val_ids, data.val_episodes)))


def fit_config(cfg: RunConfig, bench: bm.Benchmark, train: tuple[torch.Tensor, torch.Tensor],
               val: tuple[torch.Tensor, torch.Tensor]) -> Fennec:
    """A Fennec over ``bench``'s zoo fitted to ``train`` (epoch chosen on ``val``) with a run config's
    ``fennec.*``, ``optim.loss``, ``trainer.max_epochs`` and ``seed``."""
    f = cfg.fennec
    return _fit(bench, train, val, latent=f.latent, model_side=f.model_side, seed=cfg.seed, loss=cfg.optim.loss,
                lr=f.lr, weight_decay=f.weight_decay, max_epochs=cfg.trainer.max_epochs, patience=f.patience)


def fit_fennec(bench: bm.Benchmark, train_ids: list[str], val_ids: list[str], *, latent: int = 16,
               model_side: str = "both", seed: int = 0, **train_kwargs: Any) -> Fennec:
    """A :class:`Fennec` over ``bench``'s zoo fitted to the history of ``train_ids``, its epoch chosen on
    ``val_ids`` (``train_kwargs``: :func:`fit_net`'s loss, lr, weight_decay, max_epochs, patience)."""
    return _fit(bench, _history(bench, train_ids), _history(bench, val_ids), latent=latent, model_side=model_side,
                seed=seed, **train_kwargs)


def _fit(bench: bm.Benchmark, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], *,
         latent: int, model_side: str, seed: int, **train_kwargs: Any) -> Fennec:
    """A seeded :class:`Fennec` over ``bench``'s zoo (its archi2vec vectors) fitted by :func:`fit_net`."""
    names, archi = zoo_vectors(bench.manifest_path)
    if names != bench.models:
        raise ValueError(f"the manifest's models {names} are not the benchmark's {bench.models}")
    L.seed_everything(seed, workers=True, verbose=False)
    net = Fennec(archi, train[0].shape[1], latent, model_side)
    return fit_net(net, train, val, **train_kwargs)
