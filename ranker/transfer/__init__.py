"""Transferability estimators and their rank aggregation.

Every estimator is called as `get(name)(features, labels, **extra) -> float` (higher means more
transferable), with features `[N, D]` and labels `[N]` integer classes as torch tensors (computed on their
device) or numpy arrays (computed on the CPU). LogME also takes `[N, K]` float regression targets; LEEP and
NCE take the source model's probabilities as `source_probs=` `[N, Z]` and ignore `features` (may be None).

    >>> from ranker import transfer
    >>> transfer.names()
    ['logme', 'hscore', 'reg_hscore', 'nce', 'leep', 'nleep', 'gbc', 'transrate', 'sfda', 'parc']
"""

from __future__ import annotations

from collections.abc import Callable

from ranker.transfer.aggregate import aggregate
from ranker.transfer.geometry import gbc, parc
from ranker.transfer.logme import logme
from ranker.transfer.scatter import hscore, reg_hscore, sfda, transrate
from ranker.transfer.source import leep, nce, nleep

Estimator = Callable[..., float]

_REGISTRY: dict[str, Estimator] = {
    "logme": logme,
    "hscore": hscore,
    "reg_hscore": reg_hscore,
    "nce": nce,
    "leep": leep,
    "nleep": nleep,
    "gbc": gbc,
    "transrate": transrate,
    "sfda": sfda,
    "parc": parc,
}

__all__ = ["aggregate", "get", "names"]


def names() -> list[str]:
    """Registry names of the estimators, lower case, in the order of the design document."""
    return list(_REGISTRY)


def get(name: str) -> Estimator:
    """The estimator registered under `name`.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown transferability estimator {name!r}; valid names: {', '.join(names())}") from None
