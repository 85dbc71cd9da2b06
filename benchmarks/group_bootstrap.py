"""Cross-validated differences to the prior with a bootstrap over whole task groups, not over tasks.

``ranker.evaluate --cv`` resamples tasks, but the tasks of one group (a dataset, a family of clip-art categories)
are alike, so its intervals are narrower than a new *dataset* warrants. With enough groups (Benchmark v2 has 9)
the honest interval resamples groups: each resample draws groups with replacement and takes all their tasks; the
statistic is the task-weighted mean of weighted tau (rank=None) over the drawn tasks, or its paired difference to
the prior. Reads the JSON that ``python -m ranker.evaluate --cv --json`` wrote (per-task tau, folds' groups).

Run (the v2 table in docs/results.md):
    python benchmarks/group_bootstrap.py runs/eval-v2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ranker.evaluate import BOOTSTRAP_SEED, RESAMPLES


def group_interval(values: dict[str, float], groups: dict[str, list[str]], picks: np.ndarray
                   ) -> tuple[float, list[float]]:
    """(mean over every task, 95% percentile interval of the mean over the group resamples ``picks`` ``[R, G]``)
    of ``values`` (task -> value; a task without a value is left out)."""
    names = list(groups)
    sums = np.array([sum(values[t] for t in groups[g] if t in values) for g in names])
    counts = np.array([sum(t in values for t in groups[g]) for g in names])
    means = sums[picks].sum(1) / np.maximum(counts[picks].sum(1), 1)
    return float(sums.sum() / counts.sum()), [float(q) for q in np.percentile(means, [2.5, 97.5])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="the JSON of python -m ranker.evaluate --cv --json")
    args = parser.parse_args()
    cv = json.loads(args.json.read_text())["cv"]
    groups = {fold["group"]: fold["held_out"] for fold in cv["folds"]}
    per_task = cv["per_task"]
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(groups), (RESAMPLES, len(groups)))
    print(f"{len(groups)} groups, {sum(map(len, groups.values()))} tasks; 95% intervals from {RESAMPLES} resamples "
          "of whole groups")
    print("| method | wtau (rank=None) [groups resampled] | Δ vs prior [groups resampled] |")
    print("|---|---|---|")
    prior = per_task["prior"]
    for name in sorted(per_task, key=lambda n: -np.mean(list(per_task[n].values()))):
        mean, ci = group_interval(per_task[name], groups, picks)
        cells = [f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", ""]
        if name != "prior":
            diff = {t: v - prior[t] for t, v in per_task[name].items() if t in prior}
            d, dci = group_interval(diff, groups, picks)
            cells[1] = f"{d:+.3f} [{dci[0]:+.3f}, {dci[1]:+.3f}]"
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
