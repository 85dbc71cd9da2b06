"""LogME speed: `ranker.transfer.logme` against a straightforward numpy version of the published algorithm.

Both compute the same evidence on the same float32 features (cast to float64). The baseline follows the
algorithm as the authors' reference code runs it (You et al., JMLR 2022, fixed-point version): the thin SVD of F,
the N x k left singular vectors U, then a Python loop over targets, each with its own fixed-point
iteration on u^T y. Ours forms only F^T F (D x D), its eigendecomposition and F^T Y, and iterates all
targets at once. Timings are the best of a few runs on the same machine, side by side; the scores must agree
to 1e-6 relatively (they do when F has full column rank, as here with N > D; for rank F < D ours keeps the
exact log|A| term that the reference code drops). With CUDA present, ours is also timed on the GPU
(synchronized, after a warm-up run).

Run:
    python benchmarks/logme_speed.py                      # N=20000, D=1280, 10 classes (+ 10 regression targets)
    python benchmarks/logme_speed.py --n 5000 --d 512 --repeats 2
    python benchmarks/logme_speed.py --threads 1            # both libraries on one core (a busy, shared machine)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from ranker.transfer import logme
from ranker.transfer.timing import best_time, device_time, structured_features


def published_logme(features: np.ndarray, targets: np.ndarray) -> float:
    """LogME as published: thin SVD of F, U explicit, one fixed-point iteration per target column."""
    f = features.astype(np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    evidences = []
    for k in range(targets.shape[1]):
        y = targets[:, k].astype(np.float64)
        x_sq = (u.T @ y) ** 2
        outside = y @ y - x_sq.sum()  # the part of ||y||^2 outside the column space of F
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = np.sum(sigma / (sigma + t))
            m_sq = np.sum(sigma * x_sq / (sigma + t) ** 2)
            res_sq = np.sum(x_sq * t**2 / (sigma + t) ** 2) + outside
            alpha, beta = gamma / (m_sq + 1e-5), (n - gamma) / (res_sq + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - np.sum(np.log(alpha + beta * sigma)) / 2
                    - beta / 2 * res_sq - alpha / 2 * m_sq - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="samples")
    parser.add_argument("--d", type=int, default=1280, help="feature dimension")
    parser.add_argument("--classes", type=int, default=10, help="target classes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (the best is reported)")
    parser.add_argument("--threads", type=int, help="CPU threads for both numpy's BLAS and torch (default: theirs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    features, labels, targets = structured_features(args.n, args.d, args.classes, seed=0)
    one_hot = np.eye(args.classes)[labels]
    blas_threads = max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
    print(f"LogME, N={args.n} D={args.d}, float32 features (float64 math), best of {args.repeats}, "
          f"CPU threads: torch {torch.get_num_threads()}, numpy BLAS {blas_threads}")
    print(f"| {'targets':22s} | {'implementation':46s} | device | seconds | {'score':>12s} | rel. diff | speed-up |")
    print(f"|{'-' * 24}|{'-' * 48}|--------|---------|{'-' * 14}|-----------|----------|")
    rows = [(f"{args.classes} classes", labels, one_hot), (f"{targets.shape[1]} regression targets", targets, targets)]
    for title, ours_labels, reference_targets in rows:
        base_s, base = best_time(lambda: published_logme(features, reference_targets), args.repeats)
        print(f"| {title:22s} | {'published algorithm (numpy SVD, class loop)':46s} | cpu    | {base_s:7.2f} "
              f"| {base:12.8f} | {'-':>9s} | {1:7.2f}x |")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            f = torch.from_numpy(features).to(device)
            y = torch.from_numpy(ours_labels).to(device)
            ours_s, ours = device_time(lambda: logme(f, y), device, args.repeats)
            rel = abs(ours - base) / abs(base)
            print(f"| {title:22s} | {'ranker.transfer.logme (F^T F, batched targets)':46s} | {device:6s} "
                  f"| {ours_s:7.2f} | {ours:12.8f} | {rel:9.1e} | {base_s / ours_s:7.2f}x |")
            if rel > 1e-6:
                raise SystemExit(f"scores differ by {rel:.1e} relatively (> 1e-6)")


if __name__ == "__main__":
    main()
