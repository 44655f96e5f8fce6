#!/usr/bin/env bash
# The GPU check, prepared to run in one go (under 8 minutes) whenever a GPU machine is lent:
#   bash bench/gpu_check.sh            (from the repository root, or anywhere)
# It makes a venv that sees the machine's own CUDA torch (--system-site-packages), installs
# rgemma from this working tree into it without touching torch, then runs bench/gpu_check.py:
# Triton scan vs reference, decode CUDA graph vs eager, model on GPU vs CPU, and timings.
# Results: $OUT/gpu_check.json (OUT defaults to bench/results), the log on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
VENV=${VENV:-/tmp/rgemma-gpu-venv}
say() { echo "[gpu_check] $*"; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || say "no nvidia-smi"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  # no CUDA torch on the machine: fall back to the cuda wheel from the registry
  say "the machine's python has no CUDA torch; installing one into the venv"
  NEED_TORCH=1
else
  NEED_TORCH=0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV" || { say "venv failed"; exit 2; }
VPY="$VENV/bin/python"
if [ "$NEED_TORCH" = 1 ]; then
  "$VPY" -m pip install -q torch || { say "could not install torch"; exit 2; }
fi
# rgemma's pure-Python dependencies, never torch (its pin is the CPU wheel)
"$VPY" -m pip install -q --no-deps -e . || { say "pip install -e . failed"; exit 2; }
for mod in safetensors tokenizers sentencepiece jinja2 tqdm numpy; do
  "$VPY" -c "import $mod" 2>/dev/null || "$VPY" -m pip install -q "$mod" || say "could not install $mod"
done
"$VPY" -c "import triton" 2>/dev/null || "$VPY" -m pip install -q triton || say "no triton: the Triton checks will fail"
"$VPY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

status=0
timeout 420 "$VPY" bench/gpu_check.py --out "$OUT/gpu_check.json" --budget 180 || status=$?
# the fast CPU-side suite for the paths the GPU run touched, as a cross-check
timeout 60 "$VPY" -m pytest -q -x tests/ops/test_scan_triton.py tests/accel/test_speed.py 2>&1 | tail -3 || true
say "exit status $status (0: every correctness check passed; 124: timed out)"
exit $status
