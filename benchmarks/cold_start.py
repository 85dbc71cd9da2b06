"""Leave-one-model-out: what adding a model cold costs (issue 16).

For each zoo member in turn, the calibrated ranker is trained with that member's history hidden (its ground truth
and its LogME masked in every training and validation episode, so nothing is learned about it), then the member is
placed cold exactly as ``rank.py`` places a new one (``modelspider.borrow``: the token and prior of its nearest
trained members by archi2vec; a zero specific-token map; its own LogME when it embeds the data). On the
benchmark's test tasks this compares, at k=0 and at the shipped k:
- the mean weighted tau (rank=None) of the whole ranking with the member cold, against the ranker trained with
  every member's history (the shipped run config and seed, without the inner selection: Model Spider's factor is
  the checkpoint's ``spider_factor`` for every run, and k its k);
- the naive fallback: the member placed at the median of the others' scores on each task;
- the member's own rank error: |its predicted rank - its true rank|, averaged over tasks.

With ``--ranker fennec`` the same is done for Fennec (``ranker.learn.fennec``, the default run config's
``fennec.*``, k=0 only): trained with the member's ground truth masked, then placed as ``rank.py`` places a new
member, at ``A a`` (its free part zeroed; ``fennec.with_cold_models``).

Run (the tables in docs/fennec.md; 19 trainings, about 15 minutes on 2 cores; Fennec's 19 fits about 1 minute):
    python benchmarks/cold_start.py
    python benchmarks/cold_start.py --ranker fennec
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ranker.learn import episodes, fennec, lit
from ranker.learn.config import load_run_config
from ranker.learn.metrics import weighted_tau
from ranker.learn.modelspider import Ranker, borrow
from ranker.serve import export
from ranker.tasks import benchmark as bm


def scores(net: Ranker, batch: dict[str, torch.Tensor], k: int) -> np.ndarray:
    return net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"]).numpy()


def rank_of(row: np.ndarray, j: int) -> int:
    """1-based rank of entry j in ``row`` (higher is better)."""
    return int((row > row[j]).sum()) + 1


def lomo_modelspider(bench: bm.Benchmark, shipped: export.Exported, factor: float, depths: tuple[int, ...],
                     members: list[int]) -> tuple[dict[int, np.ndarray], dict[int, dict[int, np.ndarray]]]:
    """Test-task scores by depth of the calibrated ranker trained with every member, and of one trained without
    each member of ``members`` (by zoo index) and then given it cold."""
    test = episodes.collate(episodes.load_episodes(bench, bench.task_ids("test"), ["finetune"]))
    archi = shipped.archi2vec
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        def trained(name: str, hide: int | None) -> Ranker:
            """The shipped run config trained (no inner selection) with member ``hide``'s history masked."""
            cfg = copy.deepcopy(shipped.config.run)
            cfg.data.benchmark, cfg.name, cfg.out_dir, cfg.ckpt_path = bench.config.name, name, tmp, None
            data = episodes.EpisodeDataModule(cfg)
            data.setup()
            if hide is not None:
                for episode in data.train_episodes + data.val_episodes:
                    episode.target[hide] = episode.evidence[hide] = math.nan
            with contextlib.redirect_stdout(sys.stderr), torch.enable_grad():
                net = lit.train(cfg, data, Ranker)[0]
            net.calibration.spider_scale.data *= factor
            return net

        base = trained("all", None)
        full = {depth: scores(base, test, depth) for depth in depths}
        cold = {}
        for j in members:
            net = trained(f"lomo{j}", j)
            others = [i for i in range(len(bench.models)) if i != j]
            net.tokens.weight[j] = borrow(net.tokens.weight[others], archi[others], archi[j : j + 1])[0]
            for values in (net.calibration.prior, net.calibration.evidence_offset):
                values[j] = borrow(values[others], archi[others], archi[j : j + 1])[0]
            net.specific.maps[j].weight.zero_()
            net.specific.maps[j].bias.zero_()
            cold[j] = {depth: scores(net, test, depth) for depth in depths}
    return full, cold


def lomo_fennec(bench: bm.Benchmark, members: list[int]) -> tuple[dict[int, np.ndarray],
                                                                  dict[int, dict[int, np.ndarray]]]:
    """``lomo_modelspider`` for Fennec at k=0: fitted with the member's ground truth masked, its free part zeroed."""
    cfg = load_run_config()
    cfg.data.benchmark = bench.config.name
    data = episodes.EpisodeDataModule(cfg)
    data.setup()
    train, val = fennec.run_history(data)
    test = fennec.summaries(bench, bench.task_ids("test"))

    def fitted(hide: int | None) -> fennec.Fennec:
        masked = [(x, y.clone()) for x, y in (train, val)]
        if hide is not None:
            for _, y in masked:
                y[:, hide] = math.nan
        with contextlib.redirect_stdout(sys.stderr):
            return fennec.fit_config(cfg, bench, *masked)

    full, cold = {0: fitted(None).score(test).detach().numpy()}, {}
    for j in members:
        net = fitted(j)
        with torch.no_grad():
            net.free[j] = 0.0
            cold[j] = {0: net.score(test).numpy()}
    return full, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--checkpoint", type=Path, help="the export whose run config, k and archi2vec vectors are "
                        "used (trained on --benchmark; default: checkpoints/<benchmark>-default)")
    parser.add_argument("--ranker", choices=["modelspider", "fennec"], default="modelspider")
    parser.add_argument("--models", nargs="*", help="only these members (default: every one)")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    members = [j for j, m in enumerate(bench.models) if not args.models or m in args.models]
    if args.ranker == "fennec":
        depths = (0,)
        full, cold = lomo_fennec(bench, members)
    else:
        shipped = export.load(args.checkpoint or export.benchmark_checkpoint(bench.config.name), bench.manifest_path)
        depths = (0, shipped.config.rerank_k)
        full, cold = lomo_modelspider(bench, shipped, shipped.config.spider_factor, depths, members)
    _, _, truth = bench.history.matrix("finetune", bench.task_ids("test"), bench.models)
    rows = []
    for j in members:
        others = [i for i in range(len(bench.models)) if i != j]
        for depth in depths:
            placed = cold[j][depth]
            median = placed.copy()
            median[:, j] = np.median(placed[:, others], axis=1)
            rows.append({"model": bench.models[j], "k": depth} | {
                name: np.mean([weighted_tau(g, s) for g, s in zip(truth, table, strict=True)])
                for name, table in (("trained", full[depth]), ("cold", placed), ("median", median))} | {
                f"error_{name}": np.mean([abs(rank_of(s, j) - rank_of(g, j)) for g, s in zip(truth, table,
                                                                                          strict=True)])
                for name, table in (("trained", full[depth]), ("cold", placed), ("median", median))})
            print(f"{bench.models[j]} k={depth}: " + " ".join(f"{key} {v:.3f}" for key, v in rows[-1].items()
                                                              if key not in ("model", "k")), flush=True)
    print(f"\n{args.ranker}: leave-one-model-out on {bench.config.name}'s {len(truth)} test tasks "
          f"({len(members)} members)")
    print("| k | wtau, trained with it | wtau, added cold | wtau, median placement | its rank error: trained / "
          "cold / median |")
    print("|---|---|---|---|---|")
    for depth in depths:
        sel = [r for r in rows if r["k"] == depth]
        mean = {key: np.mean([r[key] for r in sel]) for key in sel[0] if key not in ("model", "k")}
        print(f"| {depth} | {mean['trained']:.3f} | {mean['cold']:.3f} | {mean['median']:.3f} | "
              f"{mean['error_trained']:.2f} / {mean['error_cold']:.2f} / {mean['error_median']:.2f} |")


if __name__ == "__main__":
    main()
