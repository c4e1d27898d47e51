#!/usr/bin/env bash
# The GPU checks and timings, in one run (about 5 minutes on one H100/H200):
#   1. tests/test_gpu.py: the nonlocal family on CUDA (exact; fused attention without N×N),
#      mixed-precision training steps;
#   2. benchmarks/nonlocal_blocks.py on the GPU, float32;
#   3. the demo config trained and multi-view tested on the GPU with mixed precision;
#   4. benchmarks/nonlocal_blocks.py on the GPU, bfloat16.
# Usage: bash benchmarks/gpu.sh OUT_DIR   (needs vidnl's dependencies and the demo data in
# data/synthetic_motion: `make demo` or `python data_prep/make_synthetic_motion.py --out data/synthetic_motion`).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

echo "== 1. tests/test_gpu.py"
timeout 120 $py -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -25 || status=1

bench() {  # dtype tables...
  local dtype=$1; shift
  timeout 180 $py benchmarks/nonlocal_blocks.py --device cuda --dtype "$dtype" --tables "$@" \
    --repeat 5 --min-time 0.3 --mem-cap-gb 60 --json "$out/nonlocal_blocks_cuda_$dtype.json" || status=1
}
echo "== 2. nonlocal blocks on the GPU, float32"
bench float32 snl crossover softmax blocks

echo "== 3. demo on the GPU (float16 autocast + gradient scaler)"
demo=${TMPDIR:-/tmp}/vidnl_demo_gpu
rm -rf "$demo"
timeout 180 $py tools/run_net.py --cfg configs/Synthetic/I3D_R18_SNL.yaml NUM_GPUS 1 TRAIN.MIXED_PRECISION True \
  DATA_LOADER.NUM_WORKERS 8 OUTPUT_DIR "$demo" > "$out/demo_gpu_stdout.txt" 2>&1 || status=1
tail -5 "$out/demo_gpu_stdout.txt"
cp "$demo/log.txt" "$out/demo_gpu_log.txt"

echo "== 4. nonlocal blocks on the GPU, bfloat16"
bench bfloat16 snl softmax blocks
exit $status
