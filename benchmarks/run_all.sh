#!/usr/bin/env bash
# Regenerate every performance table of vit3d (docs/benchmarks.md "Performance"): one command, ~30 minutes on a
# 2-core CPU. Run it on a quiet machine: other processes on the same cores distort step times (not memory).
#
#   benchmarks/run_all.sh [OUT_DIR]      # default OUT_DIR: benchmarks/results
#
# Writes OUT_DIR/{levers,peers,bench}.{json,md}, OUT_DIR/profiles.md and OUT_DIR/summary.md (all tables plus the targets, met or not).
# Peers are optional: MONAI and transformers come with vit3d[dev]; vit-pytorch's module file is fetched with
# `pip download --no-deps` into a temp dir when it is not installed (its package imports torchvision).
# Environment: PYTHON (default .venv/bin/python or python), STEPS (timed steps, default 6), ROUNDS (interleaved
# rounds of the peers, default 3), COMPILE=0 to skip the torch.compile rows.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || command -v python )}"
STEPS="${STEPS:-6}"
COMPILE="${COMPILE:-1}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "${VIT_PYTORCH_FILE:-}" ] && ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('vit_pytorch') is None)"; then
  TMP="$(mktemp -d)"
  if "$PY" -m pip download --quiet --no-deps vit-pytorch -d "$TMP" >/dev/null 2>&1; then
    (cd "$TMP" && "$PY" -m zipfile -e vit_pytorch-*.whl . >/dev/null)
    export VIT_PYTORCH_FILE="$TMP/vit_pytorch/vit_3d.py"
  else
    echo "vit-pytorch not available (no network?): its rows will say skipped" >&2
  fi
fi

echo "== levers: attention / patch-embedding paths, checkpointing, token dropping" >&2
"$PY" benchmarks/levers.py --cpu-time --steps 4 --json "$OUT/levers.json" --markdown "$OUT/levers.md" >/dev/null

echo "== vit3d bench: presets x precision (with the matmul peak of the same run)" >&2
: > "$OUT/bench.jsonl"
bench() {  # preset precision extra-args...
  local preset="$1" precision="$2"; shift 2
  local args
  if [ "$preset" = small ]; then args=(--input 3x16x112x112 --batch 4 --depth 4)
  else args=(--input 3x16x224x224 --batch 2 --depth 2); fi
  "$PY" -m pipelines.cli bench --model vit_small_patch16_3d "${args[@]}" --precision "$precision" \
      --steps "$STEPS" "$@" 2>/dev/null | "$PY" -c "import json,sys; d=json.load(sys.stdin); d['preset']='$preset'; print(json.dumps(d))" \
      >> "$OUT/bench.jsonl"
}
for preset in small long; do
  for precision in 32 bf16-mixed; do bench "$preset" "$precision"; done
done
if [ "$COMPILE" = 1 ]; then
  for preset in small long; do
    for precision in 32 bf16-mixed; do bench "$preset" "$precision" --compile; done
  done
fi

echo "== per-op profiles: vit3d against HF VideoMAE (fp32) and vit-pytorch / MONAI (bf16)" >&2
{
  "$PY" benchmarks/profile_ops.py --preset long --precision 32 --models vit3d hf-videomae
  "$PY" benchmarks/profile_ops.py --preset small --precision bf16-mixed --models vit3d vit-pytorch monai
} > "$OUT/profiles.md" 2>/dev/null

echo "== peers: vit3d, vit-pytorch, MONAI (SDPA off/on), HF VideoMAE, each in its own process" >&2
"$PY" benchmarks/peers.py --preset small long --precision 32 bf16-mixed --steps "$STEPS" --rounds "$ROUNDS" \
    --json "$OUT/peers.json" --markdown "$OUT/peers.md" >/dev/null

"$PY" benchmarks/peers.py --summarize "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
