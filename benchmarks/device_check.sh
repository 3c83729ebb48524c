#!/usr/bin/env bash
# GPU machine check, in one go (a few minutes): build the ops with the CUDA kernels, run the CUDA tests
# (CPU/CUDA parity, deterministic backward, CUDA graphs, no host sync), then the benchmark.
# Usage: benchmarks/device_check.sh   (PY=/path/to/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-8}
# Build for the local GPU only, to keep the compile short.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
echo "== build (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
time "$PY" -m pip install --no-build-isolation --no-deps -q -e .
# setup.py tolerates a failed build (reference fallback); here it must not have happened.
"$PY" -c "from distill.ops import _loader; import sys; sys.exit(0 if _loader.cuda_compiled() else 'CUDA kernels not built: ' + _loader.missing_reason())"
echo "== CUDA tests"
DISTILL_REQUIRE_OPS=1 "$PY" -m pytest -q -rs -m gpu tests/ops tests/teacher/test_crops_op.py
echo "== CPU tests of the ops (same build)"
DISTILL_REQUIRE_OPS=1 "$PY" -m pytest -q -x tests/ops tests/modeling
echo "== benchmark"
"$PY" benchmarks/roi_align.py --device cuda
