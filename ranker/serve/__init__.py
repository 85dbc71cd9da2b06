"""Serving a trained ranker: the self-contained export folder, the FAISS index over historical tasks, and the
pipeline behind ``rank.py`` (recall -> learned scores -> top-k re-ranking).

Imports every layer below it (:mod:`ranker.zoo`, :mod:`ranker.tasks`, :mod:`ranker.transfer`, :mod:`ranker.learn`).
"""
