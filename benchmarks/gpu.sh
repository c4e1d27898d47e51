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

for amp in float16 bfloat16; do
  echo "== 3. demo on the GPU ($amp autocast$([ $amp = float16 ] && echo ' + gradient scaler'))"
  demo=${TMPDIR:-/tmp}/vidnl_demo_gpu_$amp
  rm -rf "$demo"
  timeout 180 $py tools/run_net.py --cfg configs/Synthetic/I3D_R18_SNL.yaml NUM_GPUS 1 TRAIN.MIXED_PRECISION True \
    TRAIN.AMP_DTYPE $amp DATA_LOADER.NUM_WORKERS 8 OUTPUT_DIR "$demo" > "$out/demo_gpu_${amp}_stdout.txt" 2>&1 || status=1
  tail -5 "$out/demo_gpu_${amp}_stdout.txt"
  cp "$demo/log.txt" "$out/demo_gpu_${amp}_log.txt"
done
echo "== 3b. AMP step time on the GPU: float32 / bfloat16 / float16"
$py benchmarks/amp.py --speed --device cuda --out "$out/amp_gpu.json" || status=1

echo "== 4. nonlocal blocks on the GPU, bfloat16"
bench bfloat16 snl softmax blocks
exit $status
