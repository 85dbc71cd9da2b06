"""Evaluates every ranking method against fine-tuning ground truth: on a benchmark's test tasks (the fixed split)
and, with ``--cv``, by leave-one-group-out cross-validation over all its tasks; bootstrap intervals over tasks.

For each task the training part is embedded by every zoo model (timed; read from the features cache where
present, or extracted into an empty temporary cache with ``--fresh-cache`` so the seconds are the real extraction
cost), every transferability estimator scores every model on those features, and the scores over the zoo are
compared with the fine-tuning accuracies: weighted Kendall tau in both variants (``ranker.learn.metrics``) and
top-1 regret, averaged over tasks. ``prior`` ranks by mean historical accuracy on the training tasks (fine-tuning
where every model has some, else linear probe; the JSON's ``prior_kind`` says which): the same ranking for every
task, the floor a learned ranker must beat. An estimator that raises on a degenerate (task, model) is listed
under ``failures`` and that task is left out of its means (``n_tasks`` says over how many tasks each method was
averaged).

The learned ranker (an exported checkpoint, ``--checkpoint``) is evaluated as ``ranker`` (general-encoder
prototypes only) and ``ranker_rerank`` (its top k re-scored with their own prototypes, k from the checkpoint);
their extraction seconds are the general encoder's and, for re-ranking, those of the top-k models. Every ranker
of ``ranker.learn.rankers.FITTED_IN_EVALUATION`` (``fennec``) is fitted here with the default training config
(seed 0), on the training tasks minus the run config's ``data.val_tasks``, which choose its epoch, and evaluated
under its registry name at its own re-ranking depth.

Cross-validation (``cv`` in the JSON) takes every task with fine-tuning ground truth, either role, grouped by
``TaskSpec.group_name``: each fold holds out one group's tasks and evaluates them; the prior is the mean over the
other groups' tasks, and the ranker is trained again on those alone (``ranker.learn.rankers.fit_again`` with the
checkpoint's run config, in a temporary folder; its ``data.val_tasks`` outside the held-out group validate), and
so are the rankers fitted here. The folds are trained first and read no features (the rankers score from the
benchmark's stats files; the features they needed are charged afterwards), so on an empty features cache the
training need not wait for the extraction.
Estimators learn nothing from history: their scores are those of the fixed split, on more tasks.

Every mean carries a 95% percentile bootstrap interval over tasks (``wtau_ci``, ``wtau_sym_ci``, ``regret_ci``),
and every method its paired difference to the prior on the same resampled tasks (``vs_prior``); under
cross-validation ``vs_prior`` also holds ``wtau_groups_ci``, the interval with whole held-out groups resampled.
``best_constant`` is the one constant ranking fitted to the very tasks it is scored on (``best_constant``): not a
method, the ceiling of every constant list, the prior included.

LEEP and NCE need the source model's class probabilities, so they are evaluated only when every zoo model
ships a classification head (their seconds include that head's forward pass); otherwise the JSON says why
they were skipped.

Run:
    python -m ranker.evaluate --cv --json runs/eval.json --report data/benchmarks/v3/EVALUATION.md \
        --plot data/benchmarks/v3/evaluation.png

Modules: :mod:`~ranker.evaluate.protocol` (runs, metrics, bootstrap, prior, folds), :mod:`~ranker.evaluate.runs`
(every method on every split, fold caching, :func:`evaluate`), :mod:`~ranker.evaluate.report` (markdown, plot),
``__main__`` (the command line). The names below are the package's public API.
"""

from ranker.evaluate.protocol import (
    BOOTSTRAP_SEED,
    METRICS,
    PRIOR_KINDS,
    RESAMPLES,
    Fold,
    Run,
    add_group_intervals,
    best_constant,
    bootstrap_picks,
    folds,
    group_interval,
    interval,
    mean_tau,
    measured_tasks,
    prior_means,
    score_tasks,
    zscore_rows,
)
from ranker.evaluate.report import cell, markdown, plot
from ranker.evaluate.runs import NEEDS_SOURCE_HEAD, evaluate, ranker_scores, source_probs

__all__ = ["BOOTSTRAP_SEED", "METRICS", "NEEDS_SOURCE_HEAD", "PRIOR_KINDS", "RESAMPLES", "Fold", "Run",
           "add_group_intervals", "best_constant", "bootstrap_picks", "cell", "evaluate", "folds", "group_interval",
           "interval", "markdown", "mean_tau", "measured_tasks", "plot", "prior_means", "ranker_scores", "score_tasks",
           "source_probs", "zscore_rows"]
