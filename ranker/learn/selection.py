"""Model Spider's fit: training (:func:`ranker.learn.lit.train`), then the choice of what the checkpoint serves with.

A calibrated ranker's Model Spider factor (of :data:`SPIDER_FACTORS`, applied to its learned scale) and the
re-ranking depth k are chosen by grouped cross-validation inside the run's tasks (:func:`select`): each task group
held out in turn, a ranker trained on the others, the factor and k scored on the held-out group. The factor
exists because the task-conditioned term can learn which dataset a task came from, which helps on tasks like the
training ones and hurts on new ones. An uncalibrated ranker (or a run whose tasks form one group, or a DDP run)
chooses k on the validation tasks. Inside :func:`shared_inner_fits`, an inner fit on tasks that an earlier one
trained on is read back instead of trained again.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from ranker.files import write_atomic
from ranker.learn import lit
from ranker.learn.config import RunConfig, learning_yaml
from ranker.learn.episodes import Episode, EpisodeDataModule, collate, load_episodes
from ranker.learn.metrics import weighted_tau
from ranker.learn.modelspider import Ranker
from ranker.learn.protocol import Fitted

SPIDER_FACTORS = (0.0, 0.25, 0.5, 1.0)
"""Factors on a calibrated ranker's learned Model Spider scale that :func:`fit` chooses among."""

_SHARED: ContextVar[Path | None] = ContextVar("shared_inner_fits", default=None)


@contextlib.contextmanager
def shared_inner_fits(folder: Path) -> Iterator[None]:
    """Inside, :func:`select` keeps each inner fit's network in ``folder`` under a hash of its config, its benchmark's
    history and statistics and its tasks, and reads it back when a later fit would train on the same: in grouped
    cross-validation, fold g's inner fit holding group h out trains on what fold h's holding g out does, so half of
    the inner fits repeat. The hash does not cover the code: empty ``folder`` after changing it."""
    token = _SHARED.set(folder)
    try:
        yield
    finally:
        _SHARED.reset(token)


def _inner_fit(net_class: type[Ranker], cfg: RunConfig, data: EpisodeDataModule) -> Ranker:
    """An inner fit's network (eval mode), trained (:func:`ranker.learn.lit.train`); inside
    :func:`shared_inner_fits`, read back when its folder keeps it, else trained and kept there."""
    folder = _SHARED.get()
    if folder is None:
        return lit.train(cfg, data, net_class, inner=True)[0]
    key = data.bench.files_digest()
    key.update(learning_yaml(cfg).encode())
    key.update(json.dumps([data.train_ids, data.val_ids]).encode())
    kept = folder / f"inner-{key.hexdigest()[:24]}.safetensors"
    if kept.is_file():
        net = net_class(data.dims, cfg.model)
        net.load_state_dict(load_file(kept))
        return net.eval()
    net = lit.train(cfg, data, net_class, inner=True)[0]
    write_atomic(kept, save({k: v.contiguous() for k, v in net.state_dict().items()}))
    return net


@torch.no_grad()
def rerank_sweep(net: Ranker, episodes: list[Episode]) -> list[float]:
    """Mean weighted tau (rank=None) over ``episodes`` of the re-ranked scores for each depth k = 0..M (computed
    in this process alone: after a DDP fit only rank 0 calls it)."""
    batch = collate(episodes)
    taus = []
    for k in range(batch["target"].shape[1] + 1):
        scores = net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"])
        taus.append(float(np.mean([weighted_tau(g, s) for g, s in zip(batch["target"].numpy(), scores.numpy(),
                                                                       strict=True)])))
    return taus


def choose(sweeps: dict[float, list[float]]) -> tuple[float, int]:
    """(factor, k): the factor of the best mean tau over the depths k = 0..M // 2, then the depth of the best tau at
    that factor; ties: the smaller factor, the smaller k.

    The factor is chosen over every depth, not jointly with k, because one factor serves every depth ``rank.py``
    runs (``--rerank K``, k=0 included), and because the joint best is a single noisy cell.

    Args:
        sweeps: factor -> tau by depth k = 0..M (:func:`factor_sweeps`).
    """
    depths = len(next(iter(sweeps.values()))) // 2 + 1
    factor = max(sweeps, key=lambda f: (round(float(np.mean(sweeps[f][:depths])), 6), -f))
    return factor, max(range(depths), key=lambda k: (round(sweeps[factor][k], 6), -k))


def factor_sweeps(net: Ranker, episodes: list[Episode]) -> dict[float, list[float]]:
    """``rerank_sweep`` at each factor of :data:`SPIDER_FACTORS` (the net's scale is restored afterwards)."""
    learned, out = net.calibration.spider_scale.detach().clone(), {}
    for factor in SPIDER_FACTORS:
        net.calibration.spider_scale.data = learned * factor
        out[factor] = rerank_sweep(net, episodes)
    net.calibration.spider_scale.data = learned
    return out


def select(net_class: type[Ranker], cfg: RunConfig, data: EpisodeDataModule
           ) -> tuple[dict[float, list[float]], list[str]]:
    """Grouped cross-validation inside the run's tasks (training and validation, by their benchmark ``group``):
    per group, a ``net_class`` trained on the other groups (validating on their ``data.val_tasks``) in
    ``<out_dir>/<name>/inner/``, scored on the held-out group at every factor and depth. Returns the task-weighted
    mean tau by factor and depth, and the groups held out (a group is skipped when no validation task is left
    outside it)."""
    group = {t.id: t.group_name for t in data.bench.config.tasks}
    tasks = data.train_ids + data.val_ids
    totals, count, used = {}, 0, []
    names = list(dict.fromkeys(group[t] for t in tasks))
    for i, name in enumerate(tqdm(names, desc="choosing k: one fit per group held out", unit="group",
                                  file=sys.stderr)):
        held = [t for t in tasks if group[t] == name]
        inner = copy.deepcopy(cfg)
        inner.name, inner.out_dir, inner.ckpt_path, inner.overwrite = f"inner{i}", str(Path(cfg.out_dir) / cfg.name
                                                                                        / "inner"), None, True
        try:
            inner_data = EpisodeDataModule(inner, [t for t in tasks if group[t] != name], data.bench)
        except ValueError:  # no validation task outside this group
            continue
        inner_data.setup()
        net = _inner_fit(net_class, inner, inner_data)
        for factor, sweep in factor_sweeps(net, load_episodes(data.bench, held, cfg.data.target_kinds)).items():
            totals[factor] = totals.get(factor, 0) + len(held) * np.asarray(sweep)
        count, used = count + len(held), used + [name]
    return {f: (t / max(count, 1)).tolist() for f, t in totals.items()}, used


def fit(net_class: type[Ranker], cfg: RunConfig, data: EpisodeDataModule) -> Fitted | None:
    """Trains a ``net_class`` in ``<out_dir>/<name>/`` (:func:`ranker.learn.lit.train`), reloads the best
    checkpoint and chooses the factor and k (the module docstring says how). None in DDP's other processes."""
    trained = lit.train(cfg, data, net_class)
    if trained is None:
        return None
    (net, best), chosen_by = trained, "validation"
    if net.calibration is None:
        sweeps = {1.0: rerank_sweep(net, data.val_episodes)}
    else:
        sweeps, groups = select(net_class, cfg, data) if _single_process(cfg) else ({}, [])
        if len(groups) >= 2:
            chosen_by = "grouped cross-validation over " + ", ".join(groups)
        else:
            sweeps = factor_sweeps(net, data.val_episodes)
    factor, k = choose(sweeps)
    if net.calibration is not None:
        net.calibration.spider_scale.data *= factor
    report = "\n".join([f"best val/wtau {float(best.best_model_score):.3f} ({best.best_model_path})",
                        "wtau by re-ranking depth k: " + " ".join(f"{i}:{t:.3f}" for i, t in enumerate(sweeps[factor])),
                        f"chose k={k}, spider_factor {factor:g} (by {chosen_by})"])
    return Fitted(net, k, sweeps[factor], float(best.best_model_score), best.best_model_path, factor, chosen_by,
                  report)


def _single_process(cfg: RunConfig) -> bool:
    """The run trained in one process (the inner runs of ``select`` train there too; under DDP they would not)."""
    return cfg.trainer.num_nodes == 1 and cfg.trainer.strategy in ("auto", "single_device") and \
        str(cfg.trainer.devices) in ("auto", "1")
