#!/usr/bin/env bash
# One prepared check for a bare GPU machine (device tool): CUDA tests + engine benchmark.
#
# Prepare here first:  bench/fetch_gpu_wheels.sh        (fills the git-ignored .whl/)
# Device call:         carry [".whl"], timeout_s 420, command "bash bench/gpu_check.sh"
# It needs torch (CUDA), transformers and safetensors there; the rest comes from
# .whl/ (no registry access). Everything it prints is also in $OUT/gpu_check.log
# (and the benchmark's JSON in $OUT/bench_gpu.json) when $OUT is set.
# Budget: about 5 minutes (steps have their own timeouts: install 60 s,
# tests 90 s, benchmark 240 s). Exit status: 0 = all passed.
# Dry run on a CPU machine: GPU_CHECK_DEVICE=cpu BENCH_ARGS="--quick --no-build" bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:---llm both --slices 300}
DEST=${OUT:-/tmp}
mkdir -p "$DEST"
exec > >(tee "$DEST/gpu_check.log") 2>&1
t0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t0 )) s) ==="; }

step "machine"
python3 -V
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed"
nproc

step "install carried wheels into /tmp/site"
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no .whl/*.whl here: run bench/fetch_gpu_wheels.sh on the dev machine and carry .whl" >&2
  exit 3
fi
timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 3; }
if [ -d .whl/site ]; then cp -r .whl/site/. /tmp/site/; fi   # the trimmed SmolLM2 stand-in
export PYTHONPATH=/tmp/site:$PWD
DEVICE=$DEVICE python3 - <<'EOF' || exit 3
import os, torch, transformers, safetensors, numpy, SimpleITK, gguf
from llm4seg_core.model.llm import smollm2_gguf_path
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, numpy {numpy.__version__}, SimpleITK {SimpleITK.Version_VersionString()}, "
      f"gguf ok; smollm2 -> {smollm2_gguf_path()}")
assert os.environ["DEVICE"] == "cpu" or torch.cuda.is_available(), "torch sees no CUDA device"
EOF

step "pytest -m cuda tests/core"
timeout 90 python3 -m pytest -m cuda tests/core -q -p no:cacheprovider
trc=$?
case $trc in
  0) echo "cuda tests: passed" ;;
  5) echo "cuda tests: none collected (no test is marked cuda yet)"; trc=0 ;;
  124) echo "cuda tests: TIMED OUT after 90 s" ;;
  *) echo "cuda tests: FAILED (pytest exit $trc)" ;;
esac

step "bench/bench_engine.py --device $DEVICE $BENCH_ARGS"
rm -f "$DEST/bench_gpu.json"
# shellcheck disable=SC2086
timeout 240 python3 bench/bench_engine.py --device "$DEVICE" $BENCH_ARGS --json "$DEST/bench_gpu.json"
brc=$?
[ $brc = 124 ] && echo "benchmark: TIMED OUT after 240 s"

step "result"
if [ -f "$DEST/bench_gpu.json" ]; then
  python3 - "$DEST/bench_gpu.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for name, s in r["segment"].items():
    naive = f", naive {s['naive_slices_per_s']:.1f} slices/s ({s['speedup']:.2f}x)" if "naive_slices_per_s" in s else ""
    print(f"{name}: Segmenter {s['segmenter_slices_per_s']:.1f} slices/s{naive}, "
          f"{s['gflops_per_s']:,.0f} GFLOP/s forward")
EOF
fi
echo "pytest exit $trc, benchmark exit $brc, total $(( $(date +%s) - t0 )) s"
[ $trc = 0 ] && [ $brc = 0 ]
