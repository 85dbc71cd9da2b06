"""Every transferability estimator on the CPU and on CUDA: the same score, and what the GPU saves.

Each estimator of ``ranker.transfer`` runs on one task's features at a size a real zoo member gives (default
N=5000 images, D=1280 like EfficientNet-Lite0's pooled features, 10 classes; LEEP/NCE on 1000-way source
probabilities), first on the CPU, then on CUDA after one warm-up call (CUDA context and kernels), synchronized.
It prints one markdown row per estimator and exits non-zero when a CUDA score differs from the CPU one by more
than 1e-4 relatively (float64 math on both; only reduction order differs).

Run (needs a CUDA GPU; the figures in docs/install.md came from this):
    python benchmarks/estimators_cuda.py
    python benchmarks/estimators_cuda.py --n 20000 --repeats 3
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ranker import transfer
from ranker.transfer.timing import device_time, structured_features


def source_probabilities(labels: np.ndarray, n_source: int, seed: int) -> np.ndarray:
    """Softmax over ``n_source`` source classes, each target class leaning on one of them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), n_source)) + 2.0 * np.eye(n_source)[labels % n_source]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="samples")
    parser.add_argument("--d", type=int, default=1280, help="feature dimension")
    parser.add_argument("--classes", type=int, default=10, help="target classes")
    parser.add_argument("--source-classes", type=int, default=1000, help="LEEP/NCE source classes")
    parser.add_argument("--repeats", type=int, default=2, help="runs per timing (the best is reported)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    features, labels, _ = structured_features(args.n, args.d, args.classes, seed=0)
    probs = source_probabilities(labels, args.source_classes, seed=1)
    print(f"N={args.n} D={args.d} {args.classes} classes, {args.source_classes} source classes; "
          f"CPU threads {torch.get_num_threads()}, GPU {torch.cuda.get_device_name()}; best of {args.repeats}")
    print("| estimator | CPU s | CUDA s | speed-up | CPU score | CUDA score | rel. diff |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for name in transfer.names():
        estimator = transfer.get(name)
        scores, seconds = {}, {}
        for device in ("cpu", "cuda"):
            f, y = torch.from_numpy(features).to(device), torch.from_numpy(labels).to(device)
            extra = {"source_probs": torch.from_numpy(probs).to(device)} if name in ("leep", "nce") else {}
            seconds[device], scores[device] = device_time(lambda: estimator(f, y, **extra), device, args.repeats)
        rel = abs(scores["cuda"] - scores["cpu"]) / max(abs(scores["cpu"]), 1e-12)
        worst = max(worst, rel)
        print(f"| {name} | {seconds['cpu']:.3f} | {seconds['cuda']:.3f} | {seconds['cpu'] / seconds['cuda']:.1f}x "
              f"| {scores['cpu']:.6g} | {scores['cuda']:.6g} | {rel:.1e} |")
    if worst > 1e-4:
        raise SystemExit(f"a CUDA score differs from the CPU one by {worst:.1e} relatively (> 1e-4)")


if __name__ == "__main__":
    main()
