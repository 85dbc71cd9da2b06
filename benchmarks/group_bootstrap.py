"""Cross-validated differences to the prior with a bootstrap over whole task groups, not over tasks.

``ranker.evaluate --cv`` resamples tasks, but the tasks of one group (a dataset, a family of clip-art categories)
are alike, so its intervals are narrower than a new *dataset* warrants. With enough groups (Benchmark v2 has 9)
the honest interval resamples groups: each resample draws groups with replacement and takes all their tasks; the
statistic is the task-weighted mean of weighted tau (rank=None; ``--metric regret``: top-1 regret in points) over
the drawn tasks, or its paired difference to the prior (``--versus``: to each of the methods named). Reads the JSON
that ``python -m ranker.evaluate --cv --json`` wrote (per-task tau and regret, folds' groups).

Run (the tables in docs/results.md):
    python benchmarks/group_bootstrap.py runs/eval-v2.json
    python benchmarks/group_bootstrap.py runs/eval-v3.json --versus prior logme ranker_rerank
    python benchmarks/group_bootstrap.py runs/eval-v3.json --metric regret --versus prior ranker_rerank
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ranker.evaluate import RESAMPLES, group_interval

METRICS = {"wtau": "per_task", "regret": "per_task_regret"}
"""--metric -> the key of the JSON's ``cv`` that holds it per method and task."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="the JSON of python -m ranker.evaluate --cv --json")
    parser.add_argument("--versus", nargs="+", default=["prior"], metavar="METHOD",
                        help="a column of paired differences to each of these methods (default: the prior)")
    parser.add_argument("--metric", choices=list(METRICS), default="wtau",
                        help="weighted tau (rank=None; higher is better) or top-1 regret (points; lower is better)")
    args = parser.parse_args()
    cv = json.loads(args.json.read_text())["cv"]
    groups = {fold["group"]: fold["held_out"] for fold in cv["folds"]}
    if METRICS[args.metric] not in cv:
        parser.error(f"{args.json} has no {METRICS[args.metric]}: evaluate again with this version")
    per_task = cv[METRICS[args.metric]]
    if missing := [name for name in args.versus if name not in per_task]:
        parser.error(f"{', '.join(missing)} not in {args.json} (it has {', '.join(per_task)})")
    print(f"{len(groups)} groups, {sum(map(len, groups.values()))} tasks; 95% intervals from {RESAMPLES} resamples "
          "of whole groups")
    label, digits, sign = {"wtau": ("wtau (rank=None)", 3, -1), "regret": ("top-1 regret (points)", 2, 1)}[args.metric]
    print(f"| method | {label} [groups resampled] | "
          + " | ".join(f"Δ vs {ref} [groups resampled]" for ref in args.versus) + " |")
    print("|---|---|" + "---|" * len(args.versus))
    for name in sorted(per_task, key=lambda n: sign * np.mean(list(per_task[n].values()))):
        mean, ci = group_interval(per_task[name], groups)
        cells = [f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"]
        for ref in args.versus:
            if name == ref:
                cells.append("")
                continue
            diff = {t: v - per_task[ref][t] for t, v in per_task[name].items() if t in per_task[ref]}
            d, dci = group_interval(diff, groups)
            cells.append(f"{d:+.{digits}f} [{dci[0]:+.{digits}f}, {dci[1]:+.{digits}f}]")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
