#!/usr/bin/env bash
# CPU stand-ins for the inference servers (tests and `make bench`), installed once per
# machine and cached under $BENCHFLOW_CACHE (default ~/.cache/benchflow):
#   1. llama-cpp-python built with portable CPU flags (RECIPES.md: the default native
#      build segfaults on the first token here), the wheel cached in wheels/ (≈5.5 min
#      to build on 2 cores, the first time only), installed into $PY with [server];
#   2. nvidia-pytriton in its own virtualenv, venvs/pytriton (it pins numpy<2 and
#      tritonclient~=2.50, which the harness's environment cannot hold);
#   3. perf_analyzer, the reference load generator: the binary inside tritonclient
#      2.47.0 and the CUDA runtime it links, in tools/perf_analyzer-2.47.0 (newer
#      PyPI builds need glibc 2.38).
# Usage: PY=python3 scripts/install-standins.sh
set -euo pipefail
PY=${PY:-python3}
CACHE=${BENCHFLOW_CACHE:-$HOME/.cache/benchflow}
LLAMA_VERSION=0.3.36
PYTRITON_VERSION=0.7.0
PA_VERSION=2.47.0
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

# 1. llama-cpp-python
if ! "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  mkdir -p "$CACHE/wheels"
  wheel=$(ls "$CACHE"/wheels/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION (portable CPU flags; about 5 minutes)..."
    # --no-cache-dir: a wheel pip cached from a native build must not stand in for this one.
    FORCE_CMAKE=1 "$PY" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_VERSION" -w "$CACHE/wheels"
    wheel=$(ls "$CACHE"/wheels/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
  fi
  "$PY" -m pip install -q "${wheel}[server]"
fi

# 2. nvidia-pytriton, in its own environment
venv="$CACHE/venvs/pytriton"
if ! "$venv/bin/python" -c "import pytriton" 2>/dev/null; then
  echo "installing nvidia-pytriton $PYTRITON_VERSION into $venv..."
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "nvidia-pytriton==$PYTRITON_VERSION"
fi

# 3. perf_analyzer (reference figures in `make bench`)
pa="$CACHE/tools/perf_analyzer-$PA_VERSION"
if [ ! -x "$pa/bin/perf_analyzer" ]; then
  echo "installing perf_analyzer $PA_VERSION into $pa..."
  "$PY" -m pip install -q --no-deps --target "$pa" "tritonclient==$PA_VERSION" nvidia-cuda-runtime-cu12
fi
