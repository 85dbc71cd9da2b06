"""Leave-one-model-out: what adding a model cold costs (issue 16).

For each zoo member in turn, the calibrated ranker is trained with that member's history hidden (its ground truth
and its LogME masked in every training and validation episode, so nothing is learned about it), then the member is
placed cold exactly as ``rank.py`` places a new one (``modelspider.borrow``: the token and prior of its nearest
trained members by archi2vec; a zero specific-token map; its own LogME when it embeds the data). On the
benchmark's test tasks this compares, at k=0 and at the shipped k:
- the mean weighted tau (rank=None) of the whole ranking with the member cold, against the ranker trained with
  every member's history (the shipped run config and seed, without the inner selection: Model Spider's factor is
  ``--spider-factor`` for every run, the shipped checkpoint's choice by default, and k the shipped k);
- the naive fallback: the member placed at the median of the others' scores on each task;
- the member's own rank error: |its predicted rank - its true rank|, averaged over tasks.

Run (the table in README.md; 19 trainings, about 15 minutes on 2 cores):
    python benchmarks/cold_start.py
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import tempfile

import numpy as np
import torch

from ranker.learn import lit
from ranker.learn.metrics import weighted_tau
from ranker.learn.modelspider import Ranker, borrow
from ranker.serve import export
from ranker.tasks import benchmark as bm


def scores(net: Ranker, batch: dict[str, torch.Tensor], k: int) -> np.ndarray:
    return net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"]).numpy()


def rank_of(row: np.ndarray, j: int) -> int:
    """1-based rank of entry j in ``row`` (higher is better)."""
    return int((row > row[j]).sum()) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--models", nargs="*", help="only these members (default: every one)")
    parser.add_argument("--spider-factor", type=float, default=0.25,
                        help="Model Spider's factor for every run (0.25: the shipped checkpoint's choice)")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    shipped = export.load(manifest=bench.manifest_path)
    k = shipped.config.rerank_k
    test = lit.collate(lit.load_episodes(bench, bench.task_ids("test"), ["finetune"]))
    truth = test["target"].numpy()
    archi = shipped.archi2vec
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        def trained(name: str, hide: int | None) -> Ranker:
            """The shipped run config trained (no inner selection) with member ``hide``'s history masked."""
            cfg = copy.deepcopy(shipped.config.run)
            cfg.data.benchmark, cfg.name, cfg.out_dir, cfg.ckpt_path = args.benchmark, name, tmp, None
            data = lit.EpisodeDataModule(cfg)
            data.setup()
            if hide is not None:
                for episode in data.train_episodes + data.val_episodes:
                    episode.target[hide] = episode.evidence[hide] = math.nan
            with contextlib.redirect_stdout(sys.stderr), torch.enable_grad():
                net = lit.train(cfg, data)[0]
            net.calibration.spider_scale.data *= args.spider_factor
            return net

        base = trained("all", None)
        full = {depth: scores(base, test, depth) for depth in (0, k)}
        for j, model in enumerate(bench.models):
            if args.models and model not in args.models:
                continue
            net = trained(f"lomo{j}", j)
            others = [i for i in range(len(bench.models)) if i != j]
            net.tokens.weight[j] = borrow(net.tokens.weight[others], archi[others], archi[j : j + 1])[0]
            net.calibration.prior[j] = borrow(net.calibration.prior[others], archi[others], archi[j : j + 1])[0]
            net.specific.maps[j].weight.zero_()
            net.specific.maps[j].bias.zero_()
            for depth in (0, k):
                cold = scores(net, test, depth)
                median = cold.copy()
                median[:, j] = np.median(cold[:, others], axis=1)
                rows.append({
                    "model": model, "k": depth,
                    "trained": np.mean([weighted_tau(g, s) for g, s in zip(truth, full[depth], strict=True)]),
                    "cold": np.mean([weighted_tau(g, s) for g, s in zip(truth, cold, strict=True)]),
                    "median": np.mean([weighted_tau(g, s) for g, s in zip(truth, median, strict=True)]),
                    "error_trained": np.mean([abs(rank_of(s, j) - rank_of(g, j)) for g, s in zip(truth, full[depth],
                                                                                                 strict=True)]),
                    "error_cold": np.mean([abs(rank_of(s, j) - rank_of(g, j)) for g, s in zip(truth, cold,
                                                                                              strict=True)]),
                    "error_median": np.mean([abs(rank_of(s, j) - rank_of(g, j)) for g, s in zip(truth, median,
                                                                                                strict=True)]),
                })
                print(f"{model} k={depth}: " + " ".join(f"{key} {v:.3f}" for key, v in rows[-1].items()
                                                         if key not in ("model", "k")), flush=True)
    print(f"\nleave-one-model-out on {bench.config.name}'s {len(truth)} test tasks ({len(rows) // 2} members)")
    print("| k | wtau, trained with it | wtau, added cold | wtau, median placement | its rank error: trained / "
          "cold / median |")
    print("|---|---|---|---|---|")
    for depth in (0, k):
        sel = [r for r in rows if r["k"] == depth]
        mean = {key: np.mean([r[key] for r in sel]) for key in sel[0] if key not in ("model", "k")}
        print(f"| {depth} | {mean['trained']:.3f} | {mean['cold']:.3f} | {mean['median']:.3f} | "
              f"{mean['error_trained']:.2f} / {mean['error_cold']:.2f} / {mean['error_median']:.2f} |")


if __name__ == "__main__":
    main()
