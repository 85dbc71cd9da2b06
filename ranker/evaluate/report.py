"""The evaluation's report: markdown tables of one result JSON (fixed split and cross-validation) and a bar chart
of both weighted-tau variants per method."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ranker.evaluate.protocol import METRICS
from ranker.serve import export
from ranker.tasks import benchmark as bm


def cell(value: float, ci: list[float], digits: int, sign: str = "") -> str:
    """A mean and its interval for a markdown table, e.g. ``0.729 [0.660, 0.790]`` (``sign="+"``: signed)."""
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


def _table(methods: dict) -> list[str]:
    """Markdown rows of one split's methods, best wtau first; a difference to the prior whose interval excludes 0
    is bold. Where the result has them (cross-validation), the wtau difference's interval with whole groups
    resampled gets a column of its own."""
    groups = any("wtau_groups_ci" in m.get("vs_prior", {}) for m in methods.values())
    lines = ["| method | wtau | wtau_sym | regret | Δwtau vs prior | " + "Δwtau vs prior [groups] | " * groups
             + "Δwtau_sym vs prior | Δregret vs prior | s/task (features given) | s/task (incl. features) | tasks |",
             "|---" * (10 + groups) + "|"]
    for name, m in sorted(methods.items(), key=lambda item: -item[1]["wtau"]):
        cells = [cell(m[k], m[f"{k}_ci"], 2 if k == "regret" else 3) for k in METRICS]
        keys = ["wtau", "wtau_groups", "wtau_sym", "regret"] if groups else list(METRICS)
        for k in keys:
            if "vs_prior" not in m:
                cells.append("")
                continue
            d, ci = m["vs_prior"][k.removesuffix("_groups")], m["vs_prior"][f"{k}_ci"]
            text = cell(d, ci, 2 if k == "regret" else 3, "+")
            cells.append(f"**{text}**" if ci[0] > 0 or ci[1] < 0 else text)
        lines.append(f"| {name} | {' | '.join(cells)} | {m['seconds_per_task']:.3f} | "
                     f"{m['seconds_per_task_with_features']:.2f} | {m['n_tasks']} |")
    return lines


def _cv_section(cv: dict) -> list[str]:
    """Markdown lines of the cross-validation part of a result: the folds, the methods' table, what was skipped."""
    trained = [f for f in cv["folds"] if "train_seconds" in f]
    lines = ["", f"## Leave-one-group-out cross-validation ({cv['n_tasks']} tasks, either role, in "
             f"{len(cv['groups'])} groups)", "",
             "Each fold holds out every task of one group; the prior and the ranker (retrained with the "
             "checkpoint's run config; k and a calibrated ranker's spider_factor chosen as `train.py` chooses "
             "them, inside the fold's own tasks) see only the other groups' tasks.", "",
             "| held-out group | tasks | training tasks | ranker validation tasks | k | spider_factor | "
             "training s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['group']} | {len(f['held_out'])} | {f['n_train_tasks']} | {len(f.get('val_tasks', []))} | "
              f"{f['depths'].get('ranker_rerank', '')} | {f.get('spider_factor', '')} | "
              f"{f.get('train_seconds', 0):.0f} |" for f in cv["folds"]]
    lines += ["", *_table(cv["methods"])]
    lines += [f"\n- `{name}` not evaluated: {why}." for name, why in cv["skipped"].items()]
    if trained:
        lines.append(f"\nRetraining the ranker took {sum(f['train_seconds'] for f in trained):.0f} s over "
                     f"{len(trained)} folds.")
    return lines


def markdown(result: dict, plot_link: str | None = None) -> str:
    """The fixed-split table and, when cross-validated, the cross-validation table; ``plot_link``: a written bar
    chart to show (relative to the report)."""
    cv = result.get("cv")
    flags = (f" --benchmark {result['benchmark']}" * (result["benchmark"] != bm.DEFAULT_BENCHMARK)
             + (f" --checkpoint {result['checkpoint']}" if result.get("checkpoint") and Path(result["checkpoint"])
                .resolve() != export.benchmark_checkpoint(result["benchmark"]).resolve() else "")
             + (f" --estimators {' '.join(result['estimators'])}" if result.get("estimators") else "")
             + " --cv" * bool(cv) + " --fresh-cache" * result["fresh_cache"])
    cache = ("features extracted into a fresh cache, so 'incl. features' is the real extraction cost"
             if result["fresh_cache"] else "features read from the features cache where present, so 'incl. "
             "features' counts only what was not cached (`--fresh-cache` measures extraction)")
    lines = [
        f"# Evaluation on `{result['benchmark']}`: {result['n_test_tasks']} test tasks x {result['n_models']} models",
        "",
        f"Regenerate: `python -m ranker.evaluate{flags} --json runs/eval.json --report "
        f"data/benchmarks/{result['benchmark']}/EVALUATION.md"
        + (f" --plot data/benchmarks/{result['benchmark']}/evaluation.png" if plot_link else "") + "`. "
        "Ground truth: `finetune` accuracy. wtau: mean over tasks of `scipy.stats.weightedtau(gt, score, "
        "rank=None)` (Model Spider's table); wtau_sym: scipy's default weighting; regret: best accuracy minus that "
        "of the top-ranked model (points). prior: each model's mean "
        f"{result['prior_kind'] or '(none)'} accuracy on the training tasks. [brackets]: 95% percentile bootstrap "
        f"interval over tasks ({result['bootstrap']['resamples']} resamples); Δ: the paired difference to the prior "
        "on the same resampled tasks, bold where its interval excludes 0; [groups]: the same with whole held-out "
        "groups resampled. best_constant: the one constant ranking fitted to the very tasks it is scored on, the "
        f"ceiling of every constant list (the prior is one), not a method. Seconds: {cache}.",
        "",
        "## Fixed split (the test tasks)",
        "",
        *_table(result["methods"]),
    ]
    lines += [f"\n- `{name}` not evaluated: {why}." for name, why in result["skipped"].items()]
    if cv:
        lines += _cv_section(cv)
    if result["failures"]:
        lines += ["", f"Estimator failures ({len(result['failures'])}; those tasks are out of that method's means):"]
        lines += [f"- {f}" for f in result["failures"]]
    if plot_link:
        lines.append(f"\n![weighted tau per method, fixed split]({plot_link})")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path | io.BytesIO) -> None:
    """Horizontal bars of both weighted-tau variants per method on the fixed split, best first, with their
    bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["methods"].items(), key=lambda item: item[1]["wtau"])
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    for key, shift, label in (("wtau", 0.2, "wtau (rank=None, Model Spider)"),
                              ("wtau_sym", -0.2, "wtau (symmetric, scipy default)")):
        means = np.array([m[key] for _, m in rows])
        spread = np.abs(np.array([m[f"{key}_ci"] for _, m in rows]).T - means)
        ax.barh(y + shift, means, height=0.4, xerr=spread, capsize=2, label=label)
    ax.set_yticks(y, [name for name, _ in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"mean weighted Kendall tau vs fine-tuning, {result['n_test_tasks']} test tasks (95% bootstrap)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)
