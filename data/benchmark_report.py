"""Writes a benchmark's REPORT.md and heatmap.png from its history.csv: spreads, probe-vs-finetune agreement, cost.

Per task it reports the ground-truth spread (max - min accuracy over the zoo; a task where every model ties
teaches a ranker nothing) and, where both kinds exist, the weighted Kendall tau between the linear-probe and
the fine-tuning rankings, in both scipy variants: ``weightedtau(finetune, probe, rank=None)`` (Model Spider's
table) and scipy's default symmetric weighting.

Run:
    python -m data.benchmark_report                       # data/benchmarks/v3/REPORT.md + heatmap.png (the default)
    python -m data.benchmark_report --benchmark imagenet10
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data import build_history  # noqa: E402
from ranker.evaluate import best_constant, mean_tau  # noqa: E402
from ranker.learn.metrics import top1_regret, weighted_tau  # noqa: E402
from ranker.tasks import benchmark as bm  # noqa: E402
from ranker.tasks.history import Record  # noqa: E402


def _heatmap(bench: bm.Benchmark, models: list[str], path) -> None:
    kinds = [k for k in ("finetune", "linear_probe") if bench.history.records(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(7 * len(kinds), 0.22 * len(bench.config.tasks) + 3),
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        tasks = [t.id for t in bench.config.tasks if any(bench.history.get(t.id, m, kind) for m in models)]
        _, _, values = bench.history.matrix(kind, tasks, models)
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=np.nanmin(values), vmax=100)
        ax.set_xticks(range(len(models)), models, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tasks)), [f"{t} ({'test' if t in bench.task_ids('test') else 'train'})"
                                          for t in tasks], fontsize=7)
        ax.set_title(f"{kind} accuracy (%)")
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _over_ordered_pairs(metric: Callable[[np.ndarray, np.ndarray], float], runs: list[np.ndarray]) -> float:
    """The mean of ``metric(truth, ranking)`` over ordered pairs of one task's runs ``[M]`` (both metrics are
    asymmetric: one run is the truth, the other ranks)."""
    return float(np.mean([metric(a, b) for i, a in enumerate(runs) for j, b in enumerate(runs) if i != j]))


def seed_agreement(runs: list[np.ndarray]) -> float:
    """Seed-to-seed weighted tau of one task: the mean over ordered pairs of runs (``rank=None`` is asymmetric)."""
    return _over_ordered_pairs(weighted_tau, runs)


def seed_regret(runs: list[np.ndarray]) -> float:
    """Seed-to-seed top-1 regret of one task (points): the mean over ordered pairs of runs ``[M]`` of what the model
    one run ranks first loses against the other run's best, the regret a ranking that is itself a fine-tuning run of
    every model scores against one run."""
    return _over_ordered_pairs(top1_regret, runs)


def seed_noise(runs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One task's seed-to-seed accuracy differences of each model (points, every pair of ``runs`` ``[M]``) and the
    gaps between neighbouring models in the ranking of the runs' mean (``[M - 1]``): where the first are as large
    as the second, a seed reorders neighbours, which bounds the noise ceiling."""
    diffs = np.concatenate([np.abs(a - b) for i, a in enumerate(runs) for b in runs[i + 1:]])
    return diffs, np.diff(np.sort(np.mean(runs, axis=0)))


def winners_by_group(bench: bm.Benchmark, tasks: list[str], gt: np.ndarray) -> list[str]:
    """A table of which models win each task group: the model best most often and the best by mean rank.

    Args:
        tasks: the ids of the rows of ``gt``.
        gt: ``[T, M]`` fine-tuning accuracy, complete rows.
    """
    group_of = {t.id: t.group_name for t in bench.config.tasks}
    models = bench.models
    ranks = (-gt).argsort(1).argsort(1) + 1  # 1 = best; ties broken by zoo order
    lines = ["", "| test group | tasks | best most often (tasks) | best mean rank (rank) |", "|---|---|---|---|"]
    for group in dict.fromkeys(group_of[t] for t in tasks):
        rows = [i for i, t in enumerate(tasks) if group_of[t] == group]
        best = np.bincount(gt[rows].argmax(1), minlength=len(models))
        mean_rank = ranks[rows].mean(0)
        lines.append(f"| {group} | {len(rows)} | {models[int(best.argmax())]} ({best.max()}) | "
                     f"{models[int(mean_rank.argmin())]} ({mean_rank.min():.1f}) |")
    return lines + [""]


def collapses(records: list[Record], majority: dict[str, float]) -> dict[str, tuple[int, int, int]]:
    """Per model: (how many of its fine-tuning records are no better than predicting the most frequent class of the
    task's held-out part, how many of those are on a run of a task (task, seed) whose median member is above that
    floor, how many records it has), over the tasks in ``majority`` (task -> that class's share, %).

    A pair at that floor learned nothing usable: the recipe failed (a wrecked trunk, a head that cannot read the
    features) or the features transfer too little. Where the run's median member is at the floor too, the task is
    hard for the zoo; where the median is above it, the member fell
    behind on a task the zoo could learn, so a member with many such pairs needs its own setting
    (benchmarks/member_lr.py) or transfers poorly to the task's domain.
    """
    runs: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        if r.kind == "finetune" and r.task in majority:
            runs.setdefault((r.task, r.seed), []).append(r)
    out: dict[str, list[int]] = {}
    for (task, _), run in runs.items():
        floor = majority[task] + 1e-3  # history.csv keeps 6 significant digits
        learnable = float(np.median([r.value for r in run])) > floor
        for r in run:
            counts = out.setdefault(r.model, [0, 0, 0])
            counts[0] += r.value <= floor
            counts[1] += r.value <= floor and learnable
            counts[2] += 1
    return {m: (c[0], c[1], c[2]) for m, c in out.items()}


def recipe_health(bench: bm.Benchmark) -> list[str]:
    """REPORT.md's section on the fine-tuning recipe: the recipes in the history, and per member how many pairs fell
    to the most-frequent-class floor (``collapses``; the held-out labels come from the tasks' own parts)."""
    records = [r for r in bench.history.records("finetune") if r.source == build_history.SOURCE]
    if not records:
        return []
    recipes = Counter(r.recipe for r in records)
    lines = ["", "## Recipe health", "",
             f"Recipes: {', '.join(f'`{name}` {n} records' for name, n in recipes.most_common())} (the benchmark's: "
             f"`{bench.config.finetune.name}`; `python -m data.build_history` measures the others again).", ""]
    name = bench.config.finetune.name
    current = [r for r in records if r.recipe == name]
    specs = {t.id: t for t in bench.config.tasks}
    majority = {}
    for task in sorted({r.task for r in current}):
        labels = bm.task_parts(specs[task], bench.config)[1].labels
        majority[task] = 100.0 * np.bincount(labels).max() / len(labels)
    counts = collapses(current, majority)
    lines += [f"Records of `{name}` (every seed) that fine-tuned to no better than predicting the held-out part's most "
              "frequent class, per member: a failed recipe or features that transfer too little. The second column "
              "counts those on runs where the median member is above that floor (a task the zoo could learn).", "",
              "| member | at the floor | of those, where the median member is above it | records |",
              "|---|---|---|---|"]
    lines += [f"| {m} | {counts[m][0]} | {counts[m][1]} | {counts[m][2]} |" for m in bench.models if m in counts]
    return lines


def learnability(bench: bm.Benchmark) -> list[str]:
    """REPORT.md's section on whether the benchmark can show learning.

    Over the test tasks whose fine-tuning ground truth (mean over seeds) covers the whole zoo: the prior's
    weighted tau (each model's mean accuracy over the training tasks that cover the zoo), the best constant
    ranking in hindsight, how many distinct models are best, the mean weighted tau between two test tasks' rows,
    the winners per task group, and, per task with several seeds, the seed-to-seed weighted tau (the noise
    ceiling: how well one run ranks the other) and top-1 regret (what one run's first choice loses on the other).
    """
    history, models = bench.history, bench.models
    test, _, gt = history.matrix("finetune", bench.task_ids("test"), models)
    full = ~np.isnan(gt).any(1)
    train, _, train_gt = history.matrix("finetune", bench.task_ids("train"), models)
    train_full = ~np.isnan(train_gt).any(1)
    lines = ["", "## Can this benchmark show learning?", ""]
    if full.sum() < 2:
        return lines + [f"Fewer than two test tasks have fine-tuning ground truth for all {len(models)} models yet."]
    gt, test = gt[full], [t for t, ok in zip(test, full, strict=True) if ok]
    lines.append(f"Over the {len(test)} of {len(full)} test tasks with fine-tuning ground truth for all "
                 f"{len(models)} models (mean over seeds); weighted tau is `rank=None`.")
    lines.append("")
    if train_full.any():
        prior = train_gt[train_full].mean(0)
        regret = np.mean([top1_regret(row, prior) for row in gt])
        lines.append(f"- the prior (mean accuracy over the {int(train_full.sum())} training tasks that cover the zoo): "
                     f"**{mean_tau(gt, prior):.3f}**, top-1 regret {regret:.2f} points")
    scores, ceiling = best_constant(gt)
    top = ", ".join(models[j] for j in np.argsort(-scores)[:5])
    lines.append(f"- the best constant ranking in hindsight (fitted on these test tasks): **{ceiling:.3f}** "
                 f"(its top 5: {top})")
    best = np.nanargmax(gt, axis=1)
    counts = sorted(((int((best == j).sum()), models[j]) for j in set(best.tolist())), reverse=True)
    lines.append(f"- distinct best models over these test tasks: **{len(counts)}** of {len(models)} ("
                 + ", ".join(f"{m} {n}" for n, m in counts) + ")")
    pairwise = [weighted_tau(a, b) for i, a in enumerate(gt) for j, b in enumerate(gt) if i != j]
    lines.append(f"- mean weighted tau between two test tasks' ground-truth rows: **{np.mean(pairwise):.3f}** "
                 "(1: every task ranks the zoo alike)")
    lines += winners_by_group(bench, test, gt)
    seeds = history.seeds("finetune")
    runs = {s: history.matrix("finetune", test, models, seed=s)[2] for s in seeds}
    whole = {t: [runs[s][i] for s in seeds if not np.isnan(runs[s][i]).any()] for i, t in enumerate(test)}
    repeated = {t: task_runs for t, task_runs in whole.items() if len(task_runs) >= 2}
    ceilings = {t: seed_agreement(task_runs) for t, task_runs in repeated.items()}
    if ceilings:
        values = np.array(list(ceilings.values()))
        lines.append(f"- noise ceiling (seed-to-seed weighted tau) over the {len(ceilings)} tasks with 2+ seeds: "
                     f"median **{np.median(values):.3f}**, min {values.min():.3f}, max {values.max():.3f}")
        diffs, gaps = (np.concatenate(parts) for parts in zip(*map(seed_noise, repeated.values()), strict=True))
        lines.append(f"- what bounds it: a seed moves one model's accuracy on a task by a median "
                     f"{np.median(diffs):.1f} points (75th percentile {np.percentile(diffs, 75):.1f}), and "
                     f"neighbouring models in a task's ranking (mean over seeds) are a median {np.median(gaps):.1f} "
                     "points apart")
        regrets = np.array([seed_regret(task_runs) for task_runs in repeated.values()])
        lines.append(f"- the noise floor of top-1 regret: ranking by one seed's accuracies loses a mean "
                     f"**{regrets.mean():.2f}** points (median {np.median(regrets):.2f}) of the other seed's best")
        lines += ["", "| test task | seed-to-seed weighted tau |", "|---|---|"]
        lines += [f"| {t} | {v:.3f} |" for t, v in ceilings.items()]
    else:
        lines.append("- noise ceiling: no test task has fine-tuning runs with two seeds for the whole zoo yet")
    return lines


def _header(bench: bm.Benchmark, load_seconds: float) -> list[str]:
    """The report's title, how to regenerate it, and what the history holds per kind (pairs, tasks, cost)."""
    models, history = bench.models, bench.history
    lines = [
        f"# {bench.config.name}: benchmark report",
        "",
        f"Regenerate: `python -m data.benchmark_report --benchmark {bench.argument}` (from `history.csv`). "
        f"Loading the shipped benchmark (config, history, statistics) took {load_seconds:.2f} s.",
        "",
        f"- zoo: {len(models)} models ({bench.config.manifest}); tasks: {len(bench.task_ids('train'))} training, "
        f"{len(bench.task_ids('test'))} test",
    ]
    for kind in ("finetune", "linear_probe", "proxy"):
        records = history.records(kind)
        if records:
            tasks = {r.task for r in records}
            timed = [r.wall_s for r in records if np.isfinite(r.wall_s)]
            devices = ", ".join(sorted({r.device for r in records}))
            cost = (f"; {sum(timed) / 60:.1f} min of wall time in all (sum of per-pair seconds)" if timed else "")
            lines.append(f"- `{kind}`: {len(records)} pairs over {len(tasks)} tasks{cost}; device: {devices}")
    return lines


def report(bench: bm.Benchmark, load_seconds: float) -> str:
    """The REPORT.md text (and writes heatmap.png beside it)."""
    models = bench.models
    history = bench.history
    ft_tasks, _, ft = history.matrix("finetune", models=models)
    lp_tasks, _, lp = history.matrix("linear_probe", models=models)
    lp_row = {t: lp[i] for i, t in enumerate(lp_tasks)}
    lines = _header(bench, load_seconds)
    lines += ["", "## Ground truth per task", "",
              "Spread: max - min accuracy over the zoo (points). Agreement: weighted tau between the probe and the "
              "fine-tuning rankings (`rank=None` / symmetric).", "",
              "| task | role | classes | train / test imgs | finetune best (acc) | finetune spread | probe spread "
              "| probe vs finetune wtau |",
              "|---|---|---|---|---|---|---|---|"]
    ft_row = {t: ft[i] for i, t in enumerate(ft_tasks)}
    spreads, taus = {"test": [], "train": []}, []
    for spec in bench.config.tasks:
        f, p = ft_row.get(spec.id), lp_row.get(spec.id)
        some = next((r for r in history.records() if r.task == spec.id and r.kind != "proxy"), None)
        sizes = f"{some.n_train} / {some.n_test}" if some and some.n_train else "-"
        best = f"{models[int(np.nanargmax(f))]} ({np.nanmax(f):.1f})" if f is not None else "-"
        f_spread = np.nanmax(f) - np.nanmin(f) if f is not None else np.nan
        p_spread = np.nanmax(p) - np.nanmin(p) if p is not None else np.nan
        if f is not None:
            spreads[spec.role].append(f_spread)
        both = ~np.isnan(f) & ~np.isnan(p) if f is not None and p is not None else np.zeros(0, bool)
        tau = ((weighted_tau(f[both], p[both]), weighted_tau(f[both], p[both], "symmetric")) if both.sum() >= 2
               else None)  # over the models measured both ways
        if tau:
            taus.append(tau)
        n_classes = len(spec.classes) or "all"
        lines.append(f"| {spec.id} | {spec.role} | {n_classes} | {sizes} | {best} | "
                     f"{'-' if np.isnan(f_spread) else f'{f_spread:.1f}'} | "
                     f"{'-' if np.isnan(p_spread) else f'{p_spread:.1f}'} | "
                     f"{f'{tau[0]:.3f} / {tau[1]:.3f}' if tau else '-'} |")
    lines += ["", "## Summary", ""]
    for role in ("test", "train"):
        if spreads[role]:
            lines.append(f"- median finetune spread over the {len(spreads[role])} {role} tasks with ground truth: "
                         f"**{np.median(spreads[role]):.1f}** points (min {min(spreads[role]):.1f}, "
                         f"max {max(spreads[role]):.1f})")
    probe_spreads = [np.nanmax(r) - np.nanmin(r) for r in lp]
    if probe_spreads:
        lines.append(f"- median linear-probe spread over {len(probe_spreads)} tasks: "
                     f"{np.median(probe_spreads):.1f} points")
    if taus:
        mean = np.mean(taus, axis=0)
        lines.append(f"- probe vs finetune ranking agreement, mean over {len(taus)} tasks: weighted tau "
                     f"{mean[0]:.3f} (`rank=None`), {mean[1]:.3f} (symmetric)")
    lines += learnability(bench)
    lines += recipe_health(bench)
    if history.records("finetune") or history.records("linear_probe"):
        _heatmap(bench, models, bench.root / "heatmap.png")
        lines += ["", "## Task × model accuracy", "", "![task x model heatmap](heatmap.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK, help="name under data/benchmarks/ or a folder")
    args = parser.parse_args()
    start = time.perf_counter()
    bench = bm.load_benchmark(args.benchmark)
    if (bench.root / "stats.safetensors").is_file():
        bench.task_stats()
    load_seconds = time.perf_counter() - start
    text = report(bench, load_seconds)
    (bench.root / "REPORT.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
