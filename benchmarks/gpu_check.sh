#!/usr/bin/env bash
# The project's GPU paths in one short run, for a CUDA machine lent for a few minutes: what it prints and writes
# under OUTDIR is what docs/install.md's "On a GPU" section reports.
#   1. the CUDA tests (pytest -m gpu): frozen features and every estimator, CUDA against the CPU;
#   2. every estimator timed on the CPU and on CUDA (benchmarks/estimators_cuda.py);
#   3. whether this FAISS build has GPUs (the index moves there when it has);
#   4. fine-tuning ground truth at each member's native input size (recipe finetune-v1 with max_input_size 0)
#      on the offline benchmark's test tasks, one CSV row per pair (benchmarks/recipe_dependence.py), for the
#      members named in MODELS, until GT_SECONDS have passed (a stopped run keeps every finished pair).
# Usage: bash benchmarks/gpu_check.sh OUTDIR   (the project and its data importable; see docs/install.md "On a GPU")
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
$py -c "import torch, timm, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'timm', timm.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$out/gpu.txt"
echo "== 1. CUDA tests"
timeout 150 $py -m pytest -q -m gpu -p no:cacheprovider tests/test_features.py tests/test_transfer.py 2>&1 \
    | tee "$out/tests.txt" | tail -15
echo "== 2. estimators, CPU vs CUDA"
timeout 90 $py benchmarks/estimators_cuda.py 2>&1 | tee "$out/estimators.txt"
echo "== 3. FAISS"
$py -c "import faiss; print('faiss', faiss.__version__, 'GPUs:', faiss.get_num_gpus())" 2>&1 | tail -1 \
    | tee "$out/faiss.txt"
echo "== 4. ground truth at native resolution"
tasks=$($py -c "from ranker.tasks import benchmark as bm
print(' '.join(t.id for t in bm.load_benchmark('offline').config.tasks if t.role == 'test'))")
# shellcheck disable=SC2086
timeout "${GT_SECONDS:-200}" $py benchmarks/recipe_dependence.py --benchmark offline --variants 0x40 \
    --tasks $tasks --models ${MODELS:?name the members whose weights are here} --out "$out/native.csv" 2>&1 \
    | grep -v Warning | tail -5
echo "pairs measured: $(($(wc -l < "$out/native.csv") - 1))"
