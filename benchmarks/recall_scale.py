"""Hub-scale recall: per-query latency and recall@100 of the exhaustive scorer's top 10, at 10^4 and 10^5 PTMs.

A synthetic hub around the shipped ranker (its task tokenizer and fitness head, unchanged):
- PTM tokens: M draws around the 18 learned tokens (their mean, plus Gaussian mixtures of their deviations, plus
  10% isotropic noise), so the head sees tokens like those it was trained on.
- Historical tasks: T noisy copies of the benchmark's 43 real tasks (general-encoder prototypes + Gaussian noise of
  0.3 x their spread, with summary vectors of the real width 2 x 1280). Each one's "best PTMs" (its ground truth)
  are 5 of its source task's exhaustive top 50, picked by the exhaustive scores plus noise: history that agrees
  with the ranker on similar tasks, as a trained ranker's history does.
- Queries: fresh noisy copies; the truth is the exhaustive scorer's top 10 on the query itself.

Candidates are what ``ranker.serve.pipeline.Recall`` returns (the pipeline's own code): the best PTMs of the 5 nearest
historical tasks (FAISS over the summaries), then a maximum-inner-product search over the PTM tokens with
``Ranker.recall_query`` up to 100. Reported: recall@100 of the union, and of each route alone (the MIPS route
assumes nothing about the history: the conservative number); latency of recall + scoring the candidates per query,
next to exhaustive scoring. Everything runs on this machine's CPU threads (2 cores here).

Run:
    python benchmarks/recall_scale.py                          # 10^4 and 10^5 PTMs, 10^5 tasks: about 5 minutes
    python benchmarks/recall_scale.py --models 10000 --tasks 20000 --queries 20     # a quick look
    python benchmarks/recall_scale.py --models 100000 --spread 1 2 4    # tokens more spread than the learned ones
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import torch

from ranker.learn.config import RecallConfig
from ranker.learn.modelspider import Ranker, RankerDims
from ranker.serve import export
from ranker.serve.index import IVF_MIN, VectorIndex
from ranker.serve.pipeline import Recall
from ranker.tasks import benchmark as bm
from ranker.tasks import stats

NOISE = 0.3  # prototype noise, in units of each source task's prototype spread
SOURCE_TOP = 50  # a historical task's best PTMs are drawn from its source task's exhaustive top this many


def noisy(prototypes: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, C, D]`` copies of ``prototypes`` ``[C, D]`` with Gaussian noise."""
    scale = NOISE * prototypes.std()
    return prototypes + scale * torch.randn(n, *prototypes.shape, generator=gen)


def hub_ranker(exported: export.Exported, num_models: int, spread: float, gen: torch.Generator) -> Ranker:
    """The shipped tokenizer and head with ``num_models`` synthetic tokens, their deviations from the learned tokens'
    mean scaled by ``spread`` (PTM-specific maps are unused here)."""
    net = Ranker(RankerDims(num_models, exported.net.dims.general_dim, [1] * num_models), exported.net.cfg)
    shared = {k: v for k, v in exported.net.state_dict().items() if k.startswith(("tokenizer.", "head."))}
    net.load_state_dict(shared, strict=False)
    real = exported.net.tokens.weight.detach()
    deviations = real - real.mean(0)
    mix = torch.randn(num_models, len(real), generator=gen) / np.sqrt(len(real) - 1)
    iso = 0.1 * deviations.std() * torch.randn(num_models, real.shape[1], generator=gen)
    with torch.no_grad():
        net.tokens.weight.copy_(real.mean(0) + spread * (mix @ deviations + iso))
    return net.eval()


@torch.no_grad()
def exhaustive(net: Ranker, prototypes: torch.Tensor) -> torch.Tensor:
    """Scores ``[M]`` of every PTM for one task ``[C, D]``."""
    return net(prototypes[None], torch.ones(1, len(prototypes), dtype=torch.bool))[0]


def history_summaries(sources: list[torch.Tensor], counts: list[int], gen: torch.Generator) -> torch.Tensor:
    """Summary vectors ``[T, 2D]`` of ``counts[s]`` noisy copies of each source task ``s``, in source order."""
    return torch.cat([stats.summary_vector(noisy(p, n, gen)) for p, n in zip(sources, counts, strict=True)])


def history_best(net: Ranker, sources: list[torch.Tensor], counts: list[int], gen: torch.Generator) -> torch.Tensor:
    """Best-PTM lists ``[T, 5]`` of those tasks: 5 of the source's exhaustive top 50 by score plus noise."""
    best = []
    for protos, n in zip(sources, counts, strict=True):
        top_scores, top = exhaustive(net, protos).topk(SOURCE_TOP)
        jitter = top_scores.std() * torch.randn(n, SOURCE_TOP, generator=gen)
        best.append(top[(top_scores + jitter).topk(5, dim=1).indices])
    return torch.cat(best)


def _ms(seconds: list[float]) -> float:
    return 1e3 * float(np.median(seconds))


def run(exported: export.Exported, sources: list[torch.Tensor], counts: list[int], num_models: int, spread: float,
        task_index: VectorIndex, num_queries: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    net = hub_ranker(exported, num_models, spread, gen)
    best = history_best(net, sources, counts, gen)
    cfg = RecallConfig()
    recall = Recall(net, task_index, best, cfg)
    setup = time.perf_counter() - start
    hits = {"union": [], "tasks": [], "mips": []}
    latency, full, parts = [], [], {"task search": [], "MIPS query": [], "token search": [], "scoring": []}
    for q in range(num_queries):
        protos = noisy(sources[q % len(sources)], 1, gen)[0]
        mask = torch.ones(1, len(protos), dtype=torch.bool)
        start = time.perf_counter()
        truth = set(exhaustive(net, protos).topk(10).indices.tolist())
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            candidates, _, rows = recall(protos[None], mask, stats.summary_vector(protos))
            net(protos[None], mask, models=candidates)
        latency.append(time.perf_counter() - start)
        hits["union"].append(len(truth & set(candidates.tolist())) / 10)
        hits["tasks"].append(len(truth & set(best[rows, : cfg.per_task].flatten().tolist())) / 10)
        # the same steps again, one at a time, for where the time goes
        clock = time.perf_counter()
        task_index.search(stats.summary_vector(protos)[None], cfg.tasks)
        parts["task search"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        query = net.recall_query(protos[None], mask)
        parts["MIPS query"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        _, mips = recall.token_index.search(query, cfg.size)
        parts["token search"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        with torch.no_grad():
            net(protos[None], mask, models=candidates)
        parts["scoring"].append(time.perf_counter() - clock)
        hits["mips"].append(len(truth & set(mips[0].tolist())) / 10)
    return {
        "models": num_models, "spread": spread, "token_index": "IVF" if num_models >= IVF_MIN else "Flat",
        "setup_s": setup,
        "recall_at_100": float(np.mean(hits["union"])), "tasks_route": float(np.mean(hits["tasks"])),
        "mips_route": float(np.mean(hits["mips"])), "ms_median": _ms(latency),
        "ms_p95": 1e3 * float(np.percentile(latency, 95)), "exhaustive_ms": _ms(full),
        "parts": ", ".join(f"{name} {_ms(v):.1f}" for name, v in parts.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[10_000, 100_000], help="hub sizes (PTM tokens)")
    parser.add_argument("--tasks", type=int, default=100_000, help="historical tasks in the FAISS index")
    parser.add_argument("--queries", type=int, default=100, help="new tasks per hub size")
    parser.add_argument("--spread", type=float, nargs="+", default=[1.0],
                        help="scales of the synthetic tokens' deviations (1: like the learned tokens)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    exported = export.load()
    bench = bm.load_benchmark()
    sources = [protos for protos, _ in bench.task_stats().values()]
    print(f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}")
    gen = torch.Generator().manual_seed(args.seed)
    counts = [args.tasks // len(sources) + (s < args.tasks % len(sources)) for s in range(len(sources))]
    start = time.perf_counter()
    summaries = history_summaries(sources, counts, gen)
    print(f"{len(summaries)} synthetic historical tasks in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    task_index = VectorIndex.build(summaries, cosine=True)
    built = time.perf_counter() - start
    flat = faiss.IndexFlatIP(summaries.shape[1])
    unit = torch.nn.functional.normalize(summaries, dim=1).numpy()
    flat.add(unit)
    queries = torch.cat([stats.summary_vector(noisy(sources[q % len(sources)], 1, gen)[0])[None]
                         for q in range(args.queries)])
    start = time.perf_counter()
    got = [task_index.search(q[None], 5)[1][0] for q in queries]
    ivf_ms = 1e3 * (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    exact = [flat.search(torch.nn.functional.normalize(q[None], dim=1).numpy(), 5)[1][0] for q in queries]
    flat_ms = 1e3 * (time.perf_counter() - start) / len(queries)
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, exact, strict=True)])
    kind = "IVF" if len(summaries) >= IVF_MIN else "Flat"
    print(f"\n{len(summaries)} historical tasks x {summaries.shape[1]}-d summaries: {kind} index built in {built:.1f}s;"
          f" 5-NN search {ivf_ms:.2f} ms/query vs exact Flat {flat_ms:.2f} ms/query; 5-NN recall vs Flat {agree:.3f}\n")
    print("| PTMs | token spread | token index | recall@100 of exhaustive top 10 | tasks route alone | "
          "MIPS route alone | recall + scoring ms (median / p95) | exhaustive scoring ms | setup s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for m in args.models:
        for spread in args.spread:
            rows.append(run(exported, sources, counts, m, spread, task_index, args.queries, args.seed))
            r = rows[-1]
            print(f"| {m} | {spread} | {r['token_index']} | {r['recall_at_100']:.3f} | {r['tasks_route']:.3f} | "
              f"{r['mips_route']:.3f} | {r['ms_median']:.1f} / {r['ms_p95']:.1f} | {r['exhaustive_ms']:.0f} | "
              f"{r['setup_s']:.0f} |", flush=True)
    print("\nmedian ms per step: " + "; ".join(f"{r['models']} PTMs, spread {r['spread']}: {r['parts']}" for r in rows))


if __name__ == "__main__":
    main()
