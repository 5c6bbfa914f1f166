#!/usr/bin/env bash
# GPU checks and figures in one run, under 8 minutes on one H100/H200: the GPU-marked tests, then ViT-B/16 on
# 16x224x224 clips, bf16 training steps of vit3d (eager and torch.compile; recomputing blocks and plain ones),
# HF VideoMAE and MONAI ViT (SDPA), each in its own process, with the measured bf16 matmul peak of the machine.
#
#   benchmarks/gpu_suite.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu
#
# The machine needs torch with CUDA and transformers (for the VideoMAE row). Packages it lacks (monai,
# vit-pytorch) are installed from wheels in .whl/ when that folder exists, so the suite runs without network:
#   pip download --no-deps --only-binary=:all: -d .whl monai==1.6.1 vit-pytorch
# Writes OUT_DIR/{gpu.txt,tests.log,peers.json,peers.md,compile.json,compile.md,summary.md}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
PY="${PYTHON:-python3}"
STEPS="${STEPS:-10}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vit3d-site \
      .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/vit3d-site"
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$OUT/gpu.txt"

echo "== GPU-marked tests" >&2
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$OUT/tests.log"

echo "== ViT-B/16, 16x224x224, bf16: vit3d (recomputing and plain blocks), MONAI (SDPA), HF VideoMAE (SDPA), vit-pytorch" >&2
timeout 270 "$PY" benchmarks/peers.py --device cuda --preset base --precision bf16-mixed --steps "$STEPS" \
    --rounds 1 --peers vit3d vit3d-plain monai-sdpa hf-videomae vit-pytorch --json "$OUT/peers.json" --markdown "$OUT/peers.md" >/dev/null

echo "== the same, torch.compile" >&2
timeout 300 "$PY" benchmarks/peers.py --device cuda --preset base --precision bf16-mixed --steps "$STEPS" \
    --rounds 1 --peers vit3d vit3d-plain hf-videomae --compile --json "$OUT/compile.json" --markdown "$OUT/compile.md" >/dev/null

cat "$OUT"/peers.md "$OUT"/compile.md 2>/dev/null | tee "$OUT/summary.md"
