"""Cross-validated differences to the prior with a bootstrap over whole task groups, not over tasks.

``ranker.evaluate --cv`` resamples tasks, but the tasks of one group (a dataset, a family of clip-art categories)
are alike, so its intervals are narrower than a new *dataset* warrants. With enough groups (Benchmark v2 has 9)
the honest interval resamples groups: each resample draws groups with replacement and takes all their tasks; the
statistic is the task-weighted mean of weighted tau (rank=None) over the drawn tasks, or its paired difference to
the prior (``--versus``: to each of the methods named). Reads the JSON that ``python -m ranker.evaluate --cv --json``
wrote (per-task tau, folds' groups).

Run (the tables in docs/results.md):
    python benchmarks/group_bootstrap.py runs/eval-v2.json
    python benchmarks/group_bootstrap.py runs/eval-v3.json --versus prior logme ranker_rerank
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ranker.evaluate import RESAMPLES, group_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="the JSON of python -m ranker.evaluate --cv --json")
    parser.add_argument("--versus", nargs="+", default=["prior"], metavar="METHOD",
                        help="a column of paired differences to each of these methods (default: the prior)")
    args = parser.parse_args()
    cv = json.loads(args.json.read_text())["cv"]
    groups = {fold["group"]: fold["held_out"] for fold in cv["folds"]}
    per_task = cv["per_task"]
    if missing := [name for name in args.versus if name not in per_task]:
        parser.error(f"{', '.join(missing)} not in {args.json} (it has {', '.join(per_task)})")
    print(f"{len(groups)} groups, {sum(map(len, groups.values()))} tasks; 95% intervals from {RESAMPLES} resamples "
          "of whole groups")
    print("| method | wtau (rank=None) [groups resampled] | "
          + " | ".join(f"Δ vs {ref} [groups resampled]" for ref in args.versus) + " |")
    print("|---|---|" + "---|" * len(args.versus))
    for name in sorted(per_task, key=lambda n: -np.mean(list(per_task[n].values()))):
        mean, ci = group_interval(per_task[name], groups)
        cells = [f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"]
        for ref in args.versus:
            if name == ref:
                cells.append("")
                continue
            diff = {t: v - per_task[ref][t] for t, v in per_task[name].items() if t in per_task[ref]}
            d, dci = group_interval(diff, groups)
            cells.append(f"{d:+.3f} [{dci[0]:+.3f}, {dci[1]:+.3f}]")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
