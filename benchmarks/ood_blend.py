"""What rank.py does with data far from every historical task, measured on tasks with fine-tuning ground truth.

A checkpoint trained on one benchmark's history ranks test tasks of another (default: the offline checkpoint, whose
history is grey 28-px data, on Benchmark v2's colour clip-art test tasks; v2's zoo holds every offline member, so
their fine-tuning accuracies there are the truth) and the checkpoint's own benchmark's test tasks of the groups
named by ``--near`` (default: digits and LFW, new grey datasets). Every model embeds each task (k = M, what rank.py
does for flagged data), and the table compares, in mean weighted tau (rank=None):
- the ranker alone (its re-scored k = M scores);
- LogME alone;
- the equal blend of the two z-scores, what rank.py adds for data it flags;
- rank.py as shipped: the blend where the task's nearest historical task (cosine of summary vectors, as
  ``ranker.serve.pipeline``) is below ``pipeline.ood_threshold``, else the ranker at the checkpoint's k;
- the prior, the mean fine-tuning accuracy on the checkpoint's benchmark's training tasks.

Run (the figures in docs/ranking.md, "Far from the history"):
    python benchmarks/ood_blend.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ranker import evaluate
from ranker.learn import episodes
from ranker.learn.metrics import weighted_tau
from ranker.serve import export, pipeline
from ranker.tasks import benchmark as bm
from ranker.tasks.stats import summary_vector


def scores(exported: export.Exported, bench: bm.Benchmark, tasks: list[str], prior: np.ndarray,
           threshold: float) -> dict[str, np.ndarray]:
    """Per-task weighted tau of each way of ranking ``tasks`` of ``bench`` with ``exported``'s models (``prior``
    ``[M]`` in their order; ``threshold``: ``pipeline.ood_threshold``), each task's nearest historical cosine
    (``"nearest"``, from the export's task index, as rank.py finds it) and whether it is flagged (``"far"``)."""
    columns = [bench.models.index(m) for m in exported.config.models]
    batch = episodes.collate(episodes.load_episodes(bench, tasks, ["finetune"]))
    target, evidence = batch["target"][:, columns], batch["evidence"][:, columns]
    specific, everyone = batch["specific"][:, columns], batch["has_specific"][:, columns]
    if not everyone.all():
        raise SystemExit(f"benchmark {bench.config.name!r} lacks some models' own prototypes on {tasks}")
    net = exported.net
    with torch.no_grad():
        full = net(batch["prototypes"], batch["class_mask"], specific, everyone, evidence=evidence)
        blend = pipeline.far_blend(full, evidence, everyone)
        shipped_k = net.rerank(batch["prototypes"], batch["class_mask"], specific, exported.config.rerank_k, evidence)
    prototypes = [p[m] for p, m in zip(batch["prototypes"], batch["class_mask"], strict=True)]
    summary = torch.stack([summary_vector(p) for p in prototypes])
    nearest = exported.index.search(summary, 1)[0][:, 0]
    far = nearest < threshold
    shipped = torch.where(torch.from_numpy(far)[:, None], blend, shipped_k)
    out = {"nearest": nearest, "far": far}
    for name, s in (("ranker alone, k=M", full), ("LogME alone", evidence), ("equal blend", blend),
                    ("rank.py as shipped", shipped)):
        out[name] = np.array([weighted_tau(g, v) for g, v in zip(target.numpy(), s.numpy(), strict=True)])
    out["prior"] = np.array([weighted_tau(g, prior) for g in target.numpy()])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=export.benchmark_checkpoint("offline"))
    parser.add_argument("--far-benchmark", default="v2", help="the benchmark whose test tasks of --far are ranked")
    parser.add_argument("--far", nargs="+", default=["clip-nature", "clip-people"], help="task groups")
    parser.add_argument("--near", nargs="+", default=["digits", "lfw_subset"],
                        help="test-task groups of the checkpoint's own benchmark")
    args = parser.parse_args()
    exported = export.load(args.checkpoint)
    own = bm.load_benchmark(exported.config.run.data.benchmark)
    far = bm.load_benchmark(args.far_benchmark)
    prior = evaluate.prior_means(own, own.task_ids("train"))[1][[own.models.index(m) for m in exported.config.models]]
    threshold = pipeline.ood_threshold(exported.summary)
    rows = {}
    for bench, groups in ((far, args.far), (own, args.near)):
        test = set(bench.task_ids("test"))
        chosen = [t.id for t in bench.config.tasks if t.group_name in groups and t.id in test]
        _, _, truth = bench.history.matrix("finetune", chosen, exported.config.models)
        tasks = [t for t, row in zip(chosen, truth, strict=True) if np.isfinite(row).sum() >= 2]
        if not tasks:
            raise SystemExit(f"no test task of groups {groups} in benchmark {bench.config.name!r} has fine-tuning "
                             "ground truth")
        label = f"{bench.config.name}: {', '.join(groups)} ({len(tasks)} test tasks)"
        rows[label] = scores(exported, bench, tasks, prior, threshold)
    names = ["ranker alone, k=M", "LogME alone", "equal blend", "rank.py as shipped", "prior"]
    print(f"mean weighted tau (rank=None), checkpoint {args.checkpoint}; threshold "
          f"{threshold:.3f}; last column: paired 95% bootstrap interval over tasks")
    print("| data | nearest cosine | flagged | " + " | ".join(names) + " | shipped - prior |")
    print("|---" * (len(names) + 4) + "|")
    for label, r in rows.items():
        diff = r["rank.py as shipped"] - r["prior"]
        low, high = evaluate.interval(diff, evaluate.bootstrap_picks(len(diff)))
        print(f"| {label} | {r['nearest'].min():.2f}-{r['nearest'].max():.2f} | {int(r['far'].sum())} | "
              + " | ".join(f"{r[n].mean():.3f}" for n in names) + f" | {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}] |")


if __name__ == "__main__":
    main()
