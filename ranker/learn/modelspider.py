"""The learned ranker (plain torch): model tokens, a transformer task tokenizer and an attention fitness head.

After Model Spider (Zhang et al., NeurIPS 2023): every PTM of the zoo has a learned token; a task is tokenized
from the class prototypes of a frozen general encoder (projected to the token width, then a transformer encoder
lets classes see each other); one attention block lets each PTM token attend over [itself; the task tokens;
optionally its PTM-specific tokens] and a LayerNorm + linear layer reads the score off the PTM token.
PTM-specific tokens are that PTM's own class prototypes through a linear map of its own: they cost a forward
pass of the PTM over the data, so at inference only the top-k models get them (re-ranking).

Shapes: B tasks, C classes (padded to the batch's largest task), M zoo models, D the general encoder's width,
D_m model m's width (padded to the widest member; the padding is zeros and meets zero weights).

Example:
    >>> net = Ranker(RankerDims(num_models=18, general_dim=1280, model_dims=[64] * 18))
    >>> net(torch.randn(2, 5, 1280), torch.ones(2, 5, dtype=torch.bool)).shape
    torch.Size([2, 18])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Widths and depths of the ranker; the defaults train on 2 CPU cores in minutes."""

    dim: int = 64  # token width shared by model tokens, task tokens and PTM-specific tokens
    tokenizer_depth: int = 1  # transformer encoder layers of the task tokenizer
    tokenizer_heads: int = 2  # attention heads of each tokenizer layer (must divide dim)
    head_heads: int = 1  # attention heads of the fitness head (Model Spider: 1)
    dropout: float = 0.1  # dropout in the tokenizer and on the fitness head's attention
    calibrated: bool = True  # Ranker v2: learned prior + scaled Model Spider score + weighed evidence
    # of the embedded models (see Calibration); False: Model Spider's score alone, as in Zhang et al.


@dataclass
class RankerDims:
    """What the weights' shapes depend on besides ModelConfig: the zoo and the general encoder."""

    num_models: int  # zoo size M
    general_dim: int  # width D of the general encoder's features
    model_dims: list[int] = field(default_factory=list)  # width D_m of each zoo member's features, in zoo order


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Scales each vector to unit L2 norm (zero padding does not change a norm), so widths and scales compare."""
    return F.normalize(x, dim=-1, eps=1e-8)


class ModelTokens(nn.Module):
    """One learned token per zoo member."""

    def __init__(self, num_models: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_models, dim) * 0.02)

    def forward(self) -> torch.Tensor:
        return self.weight


class TaskTokenizer(nn.Module):
    """Class prototypes ``[B, C, D]`` → task tokens ``[B, C, dim]``: unit-normalize, project, transformer encoder.

    Padded classes (``class_mask`` False) are masked out of attention; their output tokens are meaningless.
    """

    def __init__(self, general_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.project = nn.Linear(general_dim, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.tokenizer_heads, dim_feedforward=2 * cfg.dim,
                                           dropout=cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.tokenizer_depth, enable_nested_tensor=False)

    def forward(self, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.project(_unit(prototypes)), src_key_padding_mask=~class_mask)


class SpecificProjection(nn.Module):
    """A linear map per zoo member from its own width to ``dim``: ``[B, M, C, D_max]`` → ``[B, M, C, dim]``.

    Member m reads only the first ``model_dims[m]`` features of its slot (the rest is padding).
    """

    def __init__(self, model_dims: list[int], dim: int) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(d, dim) for d in model_dims)

    def forward(self, prototypes: torch.Tensor, models: list[int]) -> torch.Tensor:
        """``prototypes`` ``[B, K, C, D_max]`` hold the members ``models`` (zoo indices), in that order."""
        prototypes = _unit(prototypes)
        maps = [self.maps[m] for m in models]
        return torch.stack([f(prototypes[:, i, :, : f.in_features]) for i, f in enumerate(maps)], 1)


class FitnessHead(nn.Module):
    """One attention block (no feed-forward): each model token attends over [itself; task tokens; its specific
    tokens], then LayerNorm of the residual and a linear layer give one score per (task, model)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(cfg.dim, cfg.head_heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(cfg.dim)
        self.score = nn.Linear(cfg.dim, 1)

    def forward(self, model_tokens: torch.Tensor, task_tokens: torch.Tensor, class_mask: torch.Tensor,
                specific: torch.Tensor | None = None, specific_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, M]``.

        Args:
            model_tokens: ``[M, dim]``.
            task_tokens: ``[B, C, dim]``; ``class_mask`` ``[B, C]`` is True for real classes.
            specific: ``[B, M, C, dim]`` projected PTM-specific prototypes, or None.
            specific_mask: ``[B, M]``, True where model m has specific tokens for task b.
        """
        (b, c, dim), m = task_tokens.shape, model_tokens.shape[0]
        query = model_tokens.expand(b, m, dim).reshape(b * m, 1, dim)
        keys = [query, task_tokens[:, None].expand(b, m, c, dim).reshape(b * m, c, dim)]
        valid = [torch.ones(b * m, 1, dtype=torch.bool, device=query.device),
                 class_mask[:, None].expand(b, m, c).reshape(b * m, c)]
        if specific is not None:
            keys.append(specific.reshape(b * m, c, dim))
            valid.append((class_mask[:, None] & specific_mask[..., None]).reshape(b * m, c))
        keys = torch.cat(keys, 1)
        attended, _ = self.attention(query, keys, keys, key_padding_mask=~torch.cat(valid, 1), need_weights=False)
        return self.score(self.norm(query + attended)).view(b, m)


def zscore_within(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` ``[B, K]`` z-scored within each row over the entries where ``mask`` is True and the value finite;
    0 elsewhere, and in rows with fewer than two such entries or no spread."""
    valid = mask & torch.isfinite(values)
    n = valid.sum(1, keepdim=True)
    x = torch.where(valid, values, torch.zeros_like(values))
    mean = x.sum(1, keepdim=True) / n.clamp(min=1)
    var = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x)).sum(1, keepdim=True) / n.clamp(min=1)
    z = (x - mean) / var.sqrt().clamp(min=1e-8)
    return torch.where(valid & (n >= 2) & (var > 0), z, torch.zeros_like(z))


class Calibration(nn.Module):
    """Ranker v2's explicit terms: score(t, m) = prior_m + spider_scale x spider(t, m)
    + evidence_weight x (z(t, m) - evidence_offset_m).

    ``z`` is the task's own evidence on the models that embedded its data: LogME of their features, z-scored among
    those models, since LogME's scale differs between tasks. LogME follows a model's ups and downs across tasks but
    compares different models badly: some members' LogME sits high whatever their accuracy. So
    the evidence is centred per model, by ``evidence_offset_m``, the model's mean z over the training tasks, and
    only its movement away from that mean moves the model away from its prior. In the least-squares fit of the same
    form on the training tasks (``benchmarks/evidence_ceiling.py``) that centring is what the per-model bias does.

    ``set_start`` starts the terms on the training tasks: ``prior`` at the models' mean accuracy, put on a z scale
    (each task's accuracies centred, all of them divided by one pooled spread), so that it orders the models
    exactly as the prior every ranking is held to does (mean accuracy weighs tasks with a wide spread more than a
    mean of per-task z-scores would; ``benchmarks/prior_variants.py`` compares the two); ``evidence_offset``
    (fixed, a buffer) as above; ``evidence_weight`` at the pooled within-model least-squares slope of z-scored
    ground truth on the centred evidence. ``spider_scale`` starts at 0: Model Spider's task-conditioned term must
    earn its weight. With no evidence (k = 0) and the spider term at 0 the ranker says exactly the prior, which is
    what it should say when nothing else is known.
    """

    def __init__(self, num_models: int) -> None:
        super().__init__()
        self.prior = nn.Parameter(torch.zeros(num_models))
        self.spider_scale = nn.Parameter(torch.zeros(()))
        self.evidence_weight = nn.Parameter(torch.zeros(()))
        self.register_buffer("evidence_offset", torch.zeros(num_models))

    @torch.no_grad()
    def set_start(self, targets: torch.Tensor, evidence: torch.Tensor) -> None:
        """The starting values from training targets and LogME ``[T, M]`` (NaN where unmeasured). Prior: each
        task's row centred over its measured models, divided by the pooled spread of every measured cell, averaged
        per model (0 for a model measured nowhere). Offset: LogME z-scored within each row, averaged per model.
        Weight: the slope through the origin of the target z (centred on each model's mean) on the centred
        evidence z, over the cells where both are measured (0 if there are none)."""
        target_ok, evidence_ok = torch.isfinite(targets), torch.isfinite(evidence)
        z, e = zscore_within(targets, target_ok), zscore_within(evidence, evidence_ok)
        per_model = target_ok.sum(0).clamp(min=1)
        raw = torch.where(target_ok, targets, torch.zeros_like(targets))
        centred = torch.where(target_ok, raw - raw.sum(1, keepdim=True) / target_ok.sum(1, keepdim=True).clamp(
            min=1), torch.zeros_like(raw))
        pooled = (centred.pow(2).sum() / target_ok.sum().clamp(min=1)).sqrt().clamp(min=1e-8)
        self.prior.copy_(centred.sum(0) / per_model / pooled)
        self.evidence_offset.copy_(e.sum(0) / evidence_ok.sum(0).clamp(min=1))
        both = target_ok & evidence_ok
        x = torch.where(both, e - self.evidence_offset, torch.zeros_like(e))
        y = torch.where(both, z - z.sum(0) / per_model, torch.zeros_like(z))
        self.evidence_weight.fill_(float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else 0.0)

    def forward(self, spider: torch.Tensor, models: list[int], evidence: torch.Tensor | None,
                embedded: torch.Tensor | None) -> torch.Tensor:
        score = self.prior[models] + self.spider_scale * spider
        if evidence is not None and embedded is not None:
            valid = embedded & torch.isfinite(evidence)
            valid = valid & (valid.sum(1, keepdim=True) >= 2)  # one embedded model has no z to centre
            centred = zscore_within(evidence, embedded) - self.evidence_offset[models]
            score = score + self.evidence_weight * torch.where(valid, centred, torch.zeros_like(centred))
        return score


class Ranker(nn.Module):
    """Scores every zoo model for a batch of tasks in one call (:class:`ranker.learn.protocol.LearnedRanker`'s
    calls; :mod:`ranker.learn.spider` adds its loading and fitting)."""

    reads_own_features = True  # re-ranking re-scores the top models with their own prototypes and LogME

    def __init__(self, dims: RankerDims, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        if len(dims.model_dims) != dims.num_models:
            raise ValueError(f"model_dims has {len(dims.model_dims)} widths for {dims.num_models} models")
        self.dims, self.cfg = dims, cfg
        self.tokens = ModelTokens(dims.num_models, cfg.dim)
        self.tokenizer = TaskTokenizer(dims.general_dim, cfg)
        self.specific = SpecificProjection(dims.model_dims, cfg.dim)
        self.head = FitnessHead(cfg)
        self.calibration = Calibration(dims.num_models) if cfg.calibrated else None

    def forward(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor | None = None,
                specific_mask: torch.Tensor | None = None, models: torch.Tensor | None = None,
                evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, K]`` (higher = better) of the K models ``models`` (zoo indices; None: all M, in zoo order).

        Args:
            prototypes: general-encoder class prototypes ``[B, C, D]``.
            class_mask: ``[B, C]``, True for real (not padded) classes.
            specific: those models' own class prototypes ``[B, K, C, D_max]`` (zero where absent), or None.
            specific_mask: ``[B, K]``, True where ``specific`` holds model k's prototypes for task b.
            models: ``[K]`` long zoo indices of the models to score.
            evidence: ``[B, K]`` LogME of each model's own features on the task (read where ``specific_mask`` is
                True and the value finite); only a calibrated ranker uses it.
        """
        if (specific is None) != (specific_mask is None):
            raise ValueError("pass specific and specific_mask together, or neither")
        task_tokens = self.tokenizer(prototypes, class_mask)
        members = list(range(self.dims.num_models)) if models is None else models.tolist()
        tokens = self.tokens() if models is None else self.tokens()[models]
        projected = None if specific is None else self.specific(specific, members)
        spider = self.head(tokens, task_tokens, class_mask, projected, specific_mask)
        if self.calibration is None:
            return spider
        return self.calibration(spider, members, evidence, specific_mask)

    @torch.no_grad()
    def rerank(self, prototypes: torch.Tensor, class_mask: torch.Tensor, specific: torch.Tensor,
               k: int, evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Final scores ``[B, M]`` after re-ranking: the top ``k`` models by the plain score are re-scored with
        their specific tokens and keep the top ``k`` places in that new order; the others keep their plain
        order below them. Only the top ``k`` models' entries of ``specific`` and ``evidence`` (``[B, M]`` LogME)
        are read (a caller computes just those). The returned values are comparable within a task only. Call it
        in eval mode (no dropout)."""
        plain = self(prototypes, class_mask)
        if k == 0:
            return plain
        top = plain.topk(min(k, plain.shape[1]), dim=1).indices
        specific_mask = torch.zeros_like(plain, dtype=torch.bool).scatter_(1, top, True)
        rescored = self(prototypes, class_mask, specific * specific_mask[..., None, None], specific_mask,
                        evidence=evidence)
        return merge_rerank(plain, rescored, specific_mask)

    def recall_keys(self) -> torch.Tensor:
        """``[M, dim]`` model tokens, with the calibrated prior appended as one more column: the vectors that
        ``recall_query`` queries by inner product."""
        keys = self.tokens().detach()
        if self.calibration is not None:
            keys = torch.cat([keys, self.calibration.prior.detach()[:, None]], 1)
        return keys

    def recall_query(self, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """Vectors q with score(task, model m) ≈ const + q · ``recall_keys()[m]``: the gradient of Model Spider's
        score with respect to a model token, taken at the zoo's mean token (times the calibrated scale, with a 1
        for the prior column). A maximum-inner-product search of the keys with q recalls a hub's likely top models
        without scoring every one (first-order Taylor approximation of the fitness head;
        ``benchmarks/recall_scale.py`` measures how much it misses)."""
        with torch.enable_grad():
            task_tokens = self.tokenizer(prototypes, class_mask).detach()
            mean = self.tokens().detach().mean(0, keepdim=True)
            queries = []
            for b in range(len(prototypes)):
                token = mean.clone().requires_grad_(True)
                score = self.head(token, task_tokens[b : b + 1], class_mask[b : b + 1])
                queries.append(torch.autograd.grad(score.sum(), token)[0][0])
        queries = torch.stack(queries)
        if self.calibration is None:
            return queries
        scale = self.calibration.spider_scale.detach()
        return torch.cat([scale * queries, torch.ones(len(queries), 1)], 1)


    @torch.no_grad()
    def with_cold_models(self, trained: torch.Tensor, cold: torch.Tensor, cold_dims: list[int]) -> Ranker:
        """This ranker extended by models it never trained on (cold start), appended after its M models: each
        cold model's token, calibrated prior and evidence offset are the cosine-weighted mean of those of its
        ``COLD_NEIGHBOURS`` nearest trained models by architecture vector, and its specific-token map is zero (it
        has learned none; its own LogME still counts when it embeds the data). Nothing is retrained; the result is
        of this ranker's class, in eval mode.

        Args:
            trained: ``[M, F]`` archi2vec vectors of its models, in its order.
            cold: ``[C, F]`` those of the new models.
            cold_dims: the new models' feature widths.
        """
        dims = RankerDims(self.dims.num_models + len(cold), self.dims.general_dim,
                          self.dims.model_dims + list(cold_dims))
        out = type(self)(dims, self.cfg)
        state = self.state_dict()
        state["tokens.weight"] = torch.cat([self.tokens.weight, borrow(self.tokens.weight, trained, cold)])
        if self.calibration is not None:
            for name in ("prior", "evidence_offset"):
                values = getattr(self.calibration, name)
                state[f"calibration.{name}"] = torch.cat([values, borrow(values, trained, cold)])
        for i, width in enumerate(cold_dims, start=self.dims.num_models):
            state[f"specific.maps.{i}.weight"] = torch.zeros(self.cfg.dim, width)
            state[f"specific.maps.{i}.bias"] = torch.zeros(self.cfg.dim)
        out.load_state_dict(state)
        return out.eval()


COLD_NEIGHBOURS = 3
"""Trained models whose token and prior a model without history borrows (nearest by archi2vec cosine)."""


def borrow(values: torch.Tensor, trained: torch.Tensor, cold: torch.Tensor) -> torch.Tensor:
    """``[C, ...]``: for each cold architecture vector (``cold`` ``[C, F]``), the cosine-weighted mean of ``values``
    ``[M, ...]`` over its ``COLD_NEIGHBOURS`` nearest rows of ``trained`` ``[M, F]``."""
    similarity, nearest = (F.normalize(cold, dim=1) @ F.normalize(trained, dim=1).T).topk(
        min(COLD_NEIGHBOURS, len(trained)), dim=1)
    weight = similarity.clamp(min=1e-6)
    weight = (weight / weight.sum(1, keepdim=True)).reshape(*weight.shape, *[1] * (values.dim() - 1))
    return (weight * values[nearest]).sum(1)


def merge_rerank(plain: torch.Tensor, rescored: torch.Tensor, reranked: torch.Tensor) -> torch.Tensor:
    """Re-ranked final scores ``[B, K]``: where ``reranked`` is True the ``rescored`` values (those models take
    the top places, in that order); the other models below the lowest of them, in their ``plain`` order."""
    floor = rescored.masked_fill(~reranked, float("inf")).min(1, keepdim=True).values
    return torch.where(reranked, rescored, floor - 1 - (plain.max(1, keepdim=True).values - plain))
