"""Learned rankers: Model Spider's tokens, task tokenizer and fitness head (plain torch), listwise losses, ranking
metrics, the typed training config and the Lightning glue that trains them on a benchmark's history.

Imports :mod:`ranker.zoo`, :mod:`ranker.tasks` and :mod:`ranker.transfer` from below; nothing of serving.
"""
