"""``python -m ranker.evaluate`` and the ``ptm-evaluate`` command: runs :func:`ranker.evaluate.evaluate` and writes
the JSON, the markdown report and the plot."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import ranker.evaluate as package
from ranker.evaluate.report import markdown, plot
from ranker.evaluate.runs import evaluate
from ranker.files import exit_with, write_atomic
from ranker.tasks import benchmark as bm


def main() -> None:
    """Parses the arguments, evaluates, writes what was asked and prints the report; exits 2 on a bad input."""
    parser = argparse.ArgumentParser(description=package.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    parser.add_argument("--json", type=Path, help="write the result JSON here")
    parser.add_argument("--report", type=Path, help="write the markdown tables here")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG) of both tau variants here")
    parser.add_argument("--estimators", nargs="*", help="registry names; default: all")
    parser.add_argument("--checkpoint", type=Path,
                        help="exported ranker evaluated as `ranker` and `ranker_rerank` (skipped if unusable; "
                             "default: checkpoints/<benchmark>-default); "
                             "with --cv its run config retrains it per fold")
    parser.add_argument("--cv", action="store_true",
                        help="add leave-one-group-out cross-validation over every task with fine-tuning ground truth")
    parser.add_argument("--cv-cache", type=Path, metavar="DIR",
                        help="keep each finished cross-validation fold in DIR and reuse it while its inputs (history, "
                             "task statistics, run config, tasks) are unchanged: a stopped --cv run continues where it "
                             "was (empty DIR after changing the code); runs given the same DIR share its folds, each "
                             "trained by one of them")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="extract features into an empty temporary cache, so extraction seconds are real")
    args = parser.parse_args()
    try:
        result = evaluate(args.benchmark, args.estimators, args.checkpoint, args.cv, args.fresh_cache, args.cv_cache)
    except ValueError as err:  # unknown benchmark or estimator, missing ground truth: the message says the fix
        print(f"evaluate: {err}", file=sys.stderr)
        sys.exit(2)
    link = None
    if args.plot:
        buffer = io.BytesIO()
        plot(result, buffer)
        write_atomic(args.plot, buffer.getvalue())
        link = os.path.relpath(args.plot, args.report.parent if args.report else Path.cwd())
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2).encode())
    report = markdown(result, link)
    if args.report:
        write_atomic(args.report, report.encode())
    print(report)


def cli() -> None:
    """``python -m ranker.evaluate`` and the ``ptm-evaluate`` command."""
    exit_with(main)


if __name__ == "__main__":
    cli()
