"""The examples in the docstrings of the cheap modules run as doctests (the heavy ones, which load a benchmark or
train, keep theirs as illustrations)."""

from __future__ import annotations

import doctest
import importlib

import pytest

CHEAP = ["ranker.learn.metrics", "ranker.learn.modelspider", "ranker.learn.rankers", "ranker.transfer",
         "ranker.transfer.aggregate", "ranker.transfer.common", "ranker.transfer.geometry", "ranker.transfer.logme",
         "ranker.transfer.scatter", "ranker.transfer.source"]


@pytest.mark.parametrize("name", CHEAP)
def test_the_examples_of_a_cheap_module_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no example to run"
    assert result.failed == 0, f"{result.failed} of {name}'s examples failed (the doctest report is above)"
