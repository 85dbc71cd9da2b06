"""What the tasks are: datasets and the tasks derived from them, frozen features of zoo members over them, per-task
statistics, the history of measured model x task performance, and the benchmarks that bundle them.

Imports only :mod:`ranker.zoo` (and :mod:`ranker.files`) from below.
"""
