"""Which zoo member should make the task tokens (the general encoder): candidates scored by grouped cross-validation
inside the benchmark's training tasks, never its test tasks.

Per candidate, a copy of the benchmark whose ``general_encoder`` is that member is written to a temporary folder, its
task statistics taken from the member's own class prototypes in ``model_stats.safetensors`` (float16 for every
candidate alike, so the comparison is fair; no image is read again). Per training group held out, the ranker is
fitted again on the other training groups with the train config (``train.py``'s defaults plus the overrides given;
its own k and spider factor chosen inside them) and scored at its k on the held-out group. Prints the mean weighted
tau (rank=None) of each candidate and of the prior on the same tasks, and each candidate's paired difference to the
first candidate with a 95% bootstrap interval over tasks and over whole groups.

Run (the choice in data/benchmarks/v3/README.md):
    python benchmarks/general_encoder.py --benchmark v3 --candidates mobilenetv2_100 dinov2_vits14
    python benchmarks/general_encoder.py --candidates mobilenetv2_100 efficientnet_lite0 --set trainer.max_epochs=20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ranker import evaluate
from ranker.learn import rankers, selection
from ranker.learn.config import RunConfig, load_run_config
from ranker.learn.metrics import weighted_tau
from ranker.tasks import benchmark as bm
from ranker.tasks import stats


def with_general_encoder(bench: bm.Benchmark, member: str, folder: Path) -> Path:
    """A copy of ``bench`` in ``folder`` whose general encoder is ``member``, its stats from ``member``'s own class
    prototypes; returns the folder."""
    folder.mkdir(parents=True)
    config = OmegaConf.load(bench.root / "benchmark.yaml")
    config.general_encoder = member
    OmegaConf.save(config, folder / "benchmark.yaml")
    shutil.copy(bench.root / "history.csv", folder / "history.csv")
    shutil.copy(bench.root / "model_stats.safetensors", folder / "model_stats.safetensors")
    own = bench.model_stats()
    tensors = {}
    for task, by_model in own.items():
        prototypes = by_model[member].float()
        tensors[f"{task}/prototypes"], tensors[f"{task}/summary"] = prototypes, stats.summary_vector(prototypes)
    save_file(tensors, folder / "stats.safetensors", metadata={"general_encoder": member})
    return folder


def fold_taus(run: RunConfig, benchmark: Path, out: str, name: str, train: list[str], held_out: list[str]
              ) -> np.ndarray:
    """Weighted tau per held-out task of the ranker fitted on ``train`` of ``benchmark``, at its own k."""
    fitted, data = rankers.fit_again(run, str(benchmark), out, name, train)
    scores = evaluate.ranker_scores(data.bench, fitted.net, held_out, fitted.rerank_k)
    _, _, gt = data.bench.history.matrix("finetune", held_out, data.bench.models)
    return np.array([weighted_tau(g, s) for g, s in zip(gt, scores, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=bm.DEFAULT_BENCHMARK)
    parser.add_argument("--candidates", nargs="+", required=True, metavar="MEMBER",
                        help="zoo members to compare; the first is the reference of the differences")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="train config overrides, as train.py takes them")
    args = parser.parse_args()
    bench = bm.load_benchmark(args.benchmark)
    unknown = [c for c in args.candidates if c not in bench.models]
    if unknown:
        raise SystemExit(f"general_encoder: {unknown} are not members of {bench.config.manifest}")
    run = load_run_config(overrides=args.set)
    folds = evaluate.folds(bench, evaluate.measured_tasks(bench, bench.task_ids("train")))
    held = [t for f in folds for t in f.held_out]
    taus = {}
    with tempfile.TemporaryDirectory() as tmp, selection.shared_inner_fits(Path(tmp) / "inner"):
        # every copy first: a builder merging pairs during the hours of fits must not give candidates other histories
        copies = {member: with_general_encoder(bench, member, Path(tmp) / member) for member in args.candidates}
        for member, copy in copies.items():
            taus[member] = np.concatenate([fold_taus(run, copy, f"{tmp}/runs", f"{member}-{i}", f.train, f.held_out)
                                           for i, f in enumerate(folds)])
    prior = np.concatenate([[weighted_tau(g, evaluate.prior_means(bench, f.train)[1])
                             for g in bench.history.matrix("finetune", f.held_out, bench.models)[2]] for f in folds])
    groups = {f.group: f.held_out for f in folds}
    print(f"general encoder by grouped CV inside the {len(bench.task_ids('train'))} training tasks of "
          f"{bench.config.name} ({len(held)} tasks in {len(folds)} groups); mean weighted tau (rank=None), "
          f"95% bootstrap intervals over tasks and over groups")
    print(f"| general encoder | wtau | vs prior ({prior.mean():.3f}) | vs {args.candidates[0]} [tasks] | "
          f"vs {args.candidates[0]} [groups] |")
    print("|---|---|---|---|---|")
    for member, tau in taus.items():
        cells = [f"{tau.mean():.3f}", f"{(tau - prior).mean():+.3f}", "", ""]
        if member != args.candidates[0]:
            diff = tau - taus[args.candidates[0]]
            lo, hi = evaluate.interval(diff, evaluate.bootstrap_picks(len(diff)))
            _, (glo, ghi) = evaluate.group_interval(dict(zip(held, diff, strict=True)), groups)
            cells[2:] = [f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]", f"[{glo:+.3f}, {ghi:+.3f}]"]
        print(f"| {member} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
