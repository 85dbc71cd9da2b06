"""What rank.py runs on a new dataset: recall → learned scores → re-ranking of the top k, each stage timed.

1. ``features``: the general encoder embeds the images (cached on disk like every extraction).
2. ``tokens``: class prototypes and the task's summary vector (``ranker.tasks.stats``).
3. ``recall``: the FAISS index of historical tasks gives the ``recall.tasks`` most similar earlier tasks
   (cosine of summary vectors) and each one's ``recall.per_task`` best models by ground truth; for a zoo larger
   than ``recall.size``, a maximum-inner-product search over the model tokens (``Ranker.recall_query``) fills
   the candidates up to ``recall.size``. A zoo no larger than ``recall.size`` is scored whole.
4. ``score``: the learned ranker scores the candidates from the general-encoder prototypes alone.
5. ``specific_features``: only the top ``k`` candidates embed the images themselves (loading each model once
   per Pipeline, so several datasets reuse them).
6. ``rerank``: those k are re-scored with their own prototypes (and, for a calibrated ranker, the LogME of their
   features, z-scored among them) and keep the top k places, in that order.
A dataset whose nearest historical task is below ``ood_threshold`` is flagged (``Ranking.warning``): by default
every candidate then embeds it, and their LogME (z-scored) is added with equal weight to the ranker's z-scored
scores. A ranker whose scores read no model's own features (``reads_own_features`` False, such as Fennec)
re-ranks only there.
``load`` (the ranker, the general encoder and the token index) is charged to a Pipeline's first ranking.

Example:
    >>> pipe = Pipeline(export.load())
    >>> result = pipe.rank(loaders.load_dataset("data/demo"))
    >>> result.ranking[0].model, result.timings
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ranker import transfer
from ranker.learn.config import RecallConfig
from ranker.learn.modelspider import merge_rerank, zscore_within
from ranker.learn.protocol import LearnedRanker
from ranker.serve.export import Exported, ExportError
from ranker.serve.index import VectorIndex
from ranker.tasks import features, stats
from ranker.tasks.datasets import DatasetError, Task
from ranker.zoo import manifest as zoo


@dataclass
class Ranked:
    """One row of a ranking."""

    model: str
    score: float  # comparable within one ranking only
    stage: str  # "rerank": re-scored with the model's own features; "score": the general-encoder score alone
    predicted_gap: float | None = None  # fine-tuning accuracy points below the dataset's best model (PositionGaps)
    gap_80: list[float] | None = None  # its 80% interval [low, high]
    cold: bool = False  # a model the ranker never trained on, placed by its architecture vector (no predicted gap)


@dataclass
class Neighbour:
    """A historical task found by recall."""

    task: str
    similarity: float  # cosine of the summary vectors


@dataclass
class Ranking:
    """The result for one dataset."""

    dataset: str
    ranking: list[Ranked]  # best first: the whole zoo, or the recalled candidates of a large zoo
    timings: dict[str, float]  # seconds per stage
    neighbours: list[Neighbour] = field(default_factory=list)  # most similar historical tasks, most similar first
    k: int = 0  # models re-ranked with their own features
    warning: str = ""  # one line when the dataset is far from every historical task (``ood_threshold``)

    def to_json(self) -> dict:
        """The JSON of DESIGN.md's rank.py contract, plus ``dataset``, ``neighbours``, ``k`` and ``warning``."""
        return asdict(self)


class PositionGaps:
    """How far below the dataset's best model the model at each place of a ranking will fine-tune (points), with an
    80% interval, from how the history's tasks turned out for rankings made without them.

    Each historical task of a group is ranked by the prior of the *other* groups' tasks (each model's mean accuracy
    there: what any ranking is held to, and what every learned ranker starts from), and the gap of the model at
    place r to that task's best model is recorded. At place r the predicted gap is the median of those gaps and the
    interval spans their ``level`` and ``1 - level`` quantiles; all three are made non-increasing down the ranking,
    so a row's gap never says more than the rows above it. The level is the narrowest of :data:`LEVELS` whose
    intervals, computed without one group, cover at least 80% of that group's gaps, on average over the groups
    (a new dataset is a new group). A learned ranker that beats the prior puts better models at each place, so its
    own rows' gaps tend to lie inside, nearer the top of the interval.

    Args:
        performance: ``[T, M]`` the historical tasks' ground truth, NaN where unmeasured.
        kinds: each row's history kind; only ``finetune`` rows are used.
        groups: each row's task group.
    """

    LEVELS = (0.1, 0.075, 0.05, 0.025, 0.01)

    def __init__(self, performance: torch.Tensor, kinds: list[str], groups: list[str]) -> None:
        rows = [i for i, kind in enumerate(kinds) if kind == "finetune"]
        accuracy = performance[rows].double().numpy()
        group = np.array([groups[i] for i in rows])
        if len(set(group)) < 2:
            raise ValueError(f"{len(rows)} historical tasks with fine-tuning ground truth in {len(set(group))} "
                             "group(s); predicted gaps need two groups or more")
        gaps = accuracy - np.nanmax(accuracy, axis=1, keepdims=True)
        placed = self._placed(gaps, group)
        self.level = self._level(placed)
        self.mid, self.low, self.high = self._quantiles(np.concatenate(list(placed.values())), self.level)

    @staticmethod
    def _placed(gaps: np.ndarray, group: np.ndarray) -> dict[str, np.ndarray]:
        """Per group: its tasks' gaps ``[n, M]`` in the order of the prior of the other groups."""
        out = {}
        for name in dict.fromkeys(group):
            with warnings.catch_warnings():  # a model measured nowhere in the other groups: NaN, placed last
                warnings.simplefilter("ignore", RuntimeWarning)
                prior = np.nanmean(gaps[group != name], axis=0)
            out[name] = gaps[group == name][:, np.argsort(-np.nan_to_num(prior, nan=-np.inf), kind="stable")]
        return out

    @staticmethod
    def _quantiles(placed: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median, ``level`` and ``1 - level`` quantiles ``[M]`` of the gaps by place, each non-increasing."""
        with warnings.catch_warnings():  # a place no task measured (the columns of cold members): NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanquantile(placed, [0.5, level, 1 - level], axis=0)
        return tuple(np.fmin.accumulate(v) for v in values)

    def _level(self, placed: dict[str, np.ndarray]) -> float:
        """The narrowest level whose intervals from the other groups cover at least 80% of each group's ``placed``
        gaps, on average over the groups (the widest one if none does)."""
        for level in self.LEVELS:
            inside = []
            for name, gaps in placed.items():
                _, low, high = self._quantiles(np.concatenate([g for n, g in placed.items() if n != name]), level)
                ok = np.isfinite(gaps)
                inside.append(((gaps >= low - 1e-9) & (gaps <= high + 1e-9))[ok])
            if np.concatenate(inside).mean() >= 0.8:
                return level
        return self.LEVELS[-1]

    def predict(self, places: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted gap, interval low and high (points, NaN past the history's zoo) for places 1..``places``."""
        pad = max(0, places - len(self.mid))
        return tuple(np.concatenate([v, np.full(pad, np.nan)])[:places] for v in (self.mid, self.low, self.high))


def ood_threshold(summary: torch.Tensor) -> float:
    """The cosine below which a dataset counts as far from every historical task, from the history's own spread:
    each historical task's nearest other task (cosine of summary vectors) gives a leave-one-out similarity; the
    threshold lies as far below the smallest of them as that one lies below their median, so it adapts to how
    tightly the history itself clusters.

    Args:
        summary: ``[T, 2D]`` the historical tasks' summary vectors.
    """
    unit = torch.nn.functional.normalize(summary.double(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-1.0)
    nearest = similarity.max(1).values
    return float(2 * nearest.min() - nearest.median())


class Pipeline:
    """Ranks the zoo of an exported ranker for new datasets; models are loaded once and reused.

    Args:
        exported: ``export.load(...)``; its zoo's weights are found through ``exported.manifest``.
        k: re-ranking depth; None takes the checkpoint's, or every candidate for a dataset far from all
            historical tasks (whose ranking then leans on the candidates' own evidence as much as on the history).
        cache_dir: features cache root; None means ``features.default_cache_dir()``.
    """

    def __init__(self, exported: Exported, k: int | None = None, cache_dir: str | Path | None = None) -> None:
        self.exported, self.cache_dir = exported, cache_dir
        self.models = exported.config.models
        self.k, self.fixed_k = (exported.config.rerank_k if k is None else k), k is not None
        self.ood_threshold = ood_threshold(exported.summary)
        try:
            self.gaps = PositionGaps(exported.performance, exported.task_kinds, exported.task_groups)
        except ValueError:  # a history of fine-tuning rows in one group: rows carry no predicted accuracy
            self.gaps = None
        if not 0 <= self.k <= len(self.models):
            raise ValueError(f"re-ranking depth k={self.k} is outside 0..{len(self.models)} (the zoo's size)")
        if self.k and not exported.net.reads_own_features:
            raise ValueError(f"a {exported.config.run.ranker} checkpoint scores from the general encoder alone; "
                             f"re-ranking k={self.k} would re-score nothing (data far from every historical task is "
                             "re-ranked with the models' LogME anyway): leave --rerank out")
        self._extractors: dict[str, zoo.FrozenExtractor] = {}
        start = time.perf_counter()
        general = self._extractor(exported.config.general_encoder)
        if general.weights_sha256 != exported.config.general_encoder_sha256:
            raise ExportError(f"the general encoder {general.entry.name} loaded with other weights than the "
                              "checkpoint was trained with; pass the manifest the checkpoint was trained on")
        self.net = exported.net.eval()
        cfg = exported.config.run.recall
        self.recall = Recall(self.net, exported.index, best_models(exported.performance, cfg.per_task), cfg)
        self._load_seconds = time.perf_counter() - start  # reported once, by the first ranking

    def _extractor(self, name: str) -> zoo.FrozenExtractor:
        if name not in self._extractors:
            self._extractors[name] = zoo.load_extractor(name, self.exported.manifest)
        return self._extractors[name]

    def rank(self, task: Task) -> Ranking:
        """Ranks the zoo for an image dataset, re-ranking the top ``k`` with their own features."""
        timings = self._timings()
        start = time.perf_counter()
        feats = features.extract(self._extractor(self.exported.config.general_encoder), task,
                                 cache_dir=self.cache_dir)
        timings["features"] = time.perf_counter() - start
        return self._rank(task.id, feats, torch.as_tensor(task.labels), task, timings)

    def rank_features(self, name: str, feats: np.ndarray | torch.Tensor, labels: np.ndarray) -> Ranking:
        """Ranks the zoo from precomputed general-encoder features ``[N, D]``; without images there is no
        re-ranking (``k`` = 0)."""
        feats = torch.as_tensor(feats, dtype=torch.float32)
        if feats.shape[1] != self.net.dims.general_dim:
            raise DatasetError(f"{name}: features have width {feats.shape[1]}, but the checkpoint's general encoder "
                               f"{self.exported.config.general_encoder} gives {self.net.dims.general_dim}; save "
                               "that model's features")
        return self._rank(name, feats, torch.as_tensor(labels), None, self._timings() | {"features": 0.0})

    def _timings(self) -> dict[str, float]:
        """A new ranking's timings: ``load`` (the ranker and the general encoder) is charged to the first only."""
        timings = {"load": self._load_seconds}
        self._load_seconds = 0.0
        return timings

    @torch.no_grad()
    def _rank(self, name: str, feats: torch.Tensor, labels: torch.Tensor, task: Task | None,
              timings: dict[str, float]) -> Ranking:
        """The stages after ``features`` (the module docstring's 2-6), each timed into ``timings``; ``task`` None:
        features without images, so nothing is re-ranked."""
        start = time.perf_counter()
        num_classes = int(labels.max()) + 1
        prototypes = stats.class_prototypes(feats, labels, num_classes)[None]
        summary = stats.summary_vector(prototypes[0])
        mask = torch.ones(1, num_classes, dtype=torch.bool)
        timings["tokens"] = time.perf_counter() - start

        start = time.perf_counter()
        candidates, similarity, rows = self.recall(prototypes, mask, summary)
        neighbours = [Neighbour(self.exported.task_ids[r], float(v)) for v, r in zip(similarity, rows, strict=True)]
        timings["recall"] = time.perf_counter() - start

        start = time.perf_counter()
        plain = self.net(prototypes, mask, models=candidates)
        timings["score"] = time.perf_counter() - start

        nearest = float(similarity[0]) if len(similarity) else -1.0
        far = nearest < self.ood_threshold
        k = (len(candidates) if far and not self.fixed_k else min(self.k, len(candidates))) if task is not None else 0
        warning = self._far_warning(name, nearest, k) if far else ""
        final, reranked = plain[0], torch.zeros(len(candidates), dtype=torch.bool)
        if k:
            final, reranked = self._rerank(task, labels, prototypes, mask, candidates, plain, k, far, timings)
        return Ranking(name, self._rows(final, candidates, reranked), timings, neighbours, k, warning)

    def _far_warning(self, name: str, nearest: float, k: int) -> str:
        """The one-line ``Ranking.warning`` of a dataset whose nearest historical task is below ``ood_threshold``."""
        then = (f"the top {k} embedded it, and their own LogME counts as much as the history" if k else
                "no model embedded it, so this ranking is the history's alone; pass images to let the models' "
                "own evidence decide")
        return (f"{name} is far from every historical task (nearest cosine {nearest:.3f} < "
                f"{self.ood_threshold:.3f}, the history's own spread): {then}")

    def _rerank(self, task: Task, labels: torch.Tensor, prototypes: torch.Tensor, mask: torch.Tensor,
                candidates: torch.Tensor, plain: torch.Tensor, k: int, far: bool, timings: dict[str, float]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stages 5 and 6: the top ``k`` candidates embed ``task`` and are re-scored with their own prototypes and
        LogME (blended by :func:`far_blend` when ``far``). Returns the final scores ``[K]`` and which were re-ranked
        (``[K]`` bool).

        Args:
            prototypes: the general encoder's class prototypes ``[1, C, D]``; ``mask`` ``[1, C]``.
            candidates: ``[K]`` zoo indices; ``plain`` ``[1, K]`` their general-encoder scores.
        """
        start = time.perf_counter()
        top = plain[0].topk(k).indices
        reranked = torch.zeros(len(candidates), dtype=torch.bool)
        reranked[top] = True
        num_classes = prototypes.shape[1]
        width = max(self.net.dims.model_dims[m] for m in candidates.tolist())  # every candidate's map reads
        specific = torch.zeros(1, len(candidates), num_classes, width)
        evidence = torch.full((1, len(candidates)), float("nan"))
        for i in top.tolist():
            own = features.extract(self._extractor(self.models[candidates[i]]), task, cache_dir=self.cache_dir)
            specific[0, i, :, : own.shape[1]] = stats.class_prototypes(own, labels, num_classes)
            evidence[0, i] = transfer.get("logme")(own, labels)
        timings["specific_features"] = time.perf_counter() - start
        start = time.perf_counter()
        rescored = self.net(prototypes, mask, specific, reranked[None], models=candidates, evidence=evidence)
        if far:
            rescored = far_blend(rescored, evidence, reranked[None])
        final = merge_rerank(plain, rescored, reranked[None])[0]
        timings["rerank"] = time.perf_counter() - start
        return final, reranked

    def _rows(self, final: torch.Tensor, candidates: torch.Tensor, reranked: torch.Tensor) -> list[Ranked]:
        """The ranking's rows, best first by ``final`` ``[K]`` (ties: candidate order), each with the predicted gap
        to the best model at its place (``PositionGaps``) where the history has one; cold models get none."""
        gap, low, high = self.gaps.predict(len(final)) if self.gaps is not None else (None, None, None)
        rows = []
        for place, i in enumerate(final.argsort(descending=True, stable=True).tolist()):
            m = int(candidates[i])
            row = Ranked(self.models[m], float(final[i]), "rerank" if reranked[i] else "score",
                         cold=self.models[m] in self.exported.cold)
            if gap is not None and not row.cold and np.isfinite(gap[place]):
                row.predicted_gap, row.gap_80 = round(float(gap[place]), 2), [round(float(low[place]), 2),
                                                                              round(float(high[place]), 2)]
            rows.append(row)
        return rows


def far_blend(scores: torch.Tensor, evidence: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
    """What a dataset far from every historical task is ranked by (``[B, K]``): the history knows little like it,
    so the models' own evidence gets an equal say: the ranker's ``scores`` and the LogME ``evidence``, each z-scored
    over the ``embedded`` models, added (``benchmarks/ood_blend.py`` measures it)."""
    return zscore_within(scores, embedded) + zscore_within(evidence, embedded)


def best_models(performance: torch.Tensor, n: int) -> torch.Tensor:
    """``[T, n]`` zoo indices of each historical task's ``n`` best measured models, best first; -1 pads tasks
    with fewer measured models."""
    best = torch.nan_to_num(performance, nan=-float("inf")).argsort(dim=1, descending=True, stable=True)[:, :n]
    return best.masked_fill(performance.gather(1, best).isnan(), -1)


class Recall:
    """Candidates for one task: the best models of the most similar historical tasks, then, for a zoo larger
    than ``cfg.size``, a maximum-inner-product search over the model tokens (``Ranker.recall_query``) up to
    ``cfg.size`` candidates. A zoo no larger than ``cfg.size`` is returned whole.

    Args:
        net: the ranker (its model tokens; eval mode).
        task_index: cosine index over the historical tasks' summary vectors.
        best: ``[T, P]`` each historical task's best models (``best_models``); the first ``cfg.per_task`` are used.
        cfg: how many tasks, models per task, and candidates in all.
    """

    def __init__(self, net: LearnedRanker, task_index: VectorIndex, best: torch.Tensor, cfg: RecallConfig) -> None:
        if task_index.size != len(best):
            raise ValueError(f"the task index holds {task_index.size} tasks, best lists are given for {len(best)}")
        self.net, self.task_index, self.best, self.cfg = net, task_index, best[:, : cfg.per_task], cfg
        self.token_index = None
        if net.dims.num_models > cfg.size:
            self.token_index = VectorIndex.build(net.recall_keys(), cosine=False)

    def __call__(self, prototypes: torch.Tensor, mask: torch.Tensor, summary: torch.Tensor
                 ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Candidate zoo indices ``[K]`` (tasks' best first, then by token inner product), and the nearest
        historical tasks' cosine similarities and rows, most similar first."""
        similarity, rows = self.task_index.search(summary[None], self.cfg.tasks)
        found = rows[0] >= 0
        similarity, rows = similarity[0][found], rows[0][found]
        if self.token_index is None:
            return torch.arange(self.net.dims.num_models), similarity, rows
        chosen = dict.fromkeys(m for m in self.best[rows].flatten().tolist() if m >= 0)  # an ordered set
        if len(chosen) < self.cfg.size:
            _, tokens = self.token_index.search(self.net.recall_query(prototypes, mask), self.cfg.size)
            for m in tokens[0][tokens[0] >= 0].tolist():
                if len(chosen) >= self.cfg.size:
                    break
                chosen[m] = None
        return torch.tensor(list(chosen)[: self.cfg.size]), similarity, rows
