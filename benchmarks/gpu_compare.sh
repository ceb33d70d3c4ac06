#!/usr/bin/env bash
# The working tree against a baseline commit on one GPU box, in one call, so that both are
# timed on the same machine (docs/benchmarks.md):
#
#   BASELINE=<rev> bash benchmarks/gpu_prepare.sh        # here: .gpu/ plus that commit in .gpu/baseline
#   OUT=/tmp/out bash benchmarks/gpu_compare.sh           # there
#   PYTHON=.venv/bin/python EXTRA="--device cpu --tiny --dtypes float32 --sentences 30 --batch-sizes 16" \
#     APPEND="--layers 2 --sentences 50 --threads 2" OUT=/tmp/out bash benchmarks/gpu_compare.sh   # a CPU check
#   STEPS="pytest new-10005 new-2001 base-10005" OUT=/tmp/out bash benchmarks/gpu_compare.sh
#     # what the sixth session left to measure, with the default variants (docs/benchmarks.md)
#
# Steps, most important first, each time-bounded: the device-sparsification tests on CUDA; the
# working tree's GPU benchmark on EWT dev (2,001 sentences) with the variants in $VARIANTS; the
# baseline's on the same; DuckDB's append speed alone (benchmarks/append.py); both on 10,005
# sentences. $OUT gets one JSON per step, the log and nvidia-smi's report (8 files at most).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/compare-log.txt
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# the tokenizer's own threads for the reading thread, and Python's switch interval as before
# (5 ms), each twice and alternating, so that the box's noise shows (docs/benchmarks.md); on EWT
# dev also the model run whole instead of stopped at its last attention map (eighth session), on
# the 10,005 sentences also the heap left in the garbage collector's view (ninth session)
VARIANTS=${VARIANTS:-"tokenizer_parallel=true switch_us=0 stop_at_last_map=false"}              # on EWT dev, bert-base b=1024
VARIANTS_LONG=${VARIANTS_LONG:-"tokenizer_parallel=true switch_us=0 freeze_heap=false tokenizer_parallel=true switch_us=0 freeze_heap=false"}  # on 10,005, b=512
STEPS=${STEPS:-"new-2001 pytest base-2001 append new-10005 base-10005"}
has() { [[ " $STEPS " == *" $1 "* ]]; }
PY=${PYTHON:-python3}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute, links kept (a venv's python)
export PYTHON=$PY
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
read -r -a APPEND_ARGS <<< "${APPEND:-}"
say() { echo "[gpu_compare $(date +%T)] $*" | tee -a "$LOG"; }

bench() {  # bench NAME ROOT SITE ARGS...: ROOT's benchmarks/gpu.sh, its JSON to $OUT/NAME.json
  local name=$1 root=$2 site=$3; shift 3
  local tmp=/tmp/gpu-$name
  rm -rf "$tmp" && mkdir -p "$tmp"
  say "$name: $*"
  (cd "$root" && OUT=$tmp GPU_SITE=$site BENCH_TIMEOUT=${BENCH_TIMEOUT:-240} bash benchmarks/gpu.sh "$@" "${EXTRA_ARGS[@]}") 2>&1 \
    | grep -v "Writing model shards" | tee -a "$LOG"
  cp "$tmp/gpu-results.json" "$OUT/$name.json" 2>/dev/null || say "$name: no results"
  [ -f "$OUT/nvidia-smi.txt" ] || cp "$tmp/nvidia-smi.txt" "$OUT/" 2>/dev/null
}

BASE=$REPO/.gpu/baseline
[ -d "$BASE" ] && ln -sfn "$REPO/.gpu" "$BASE/.gpu"  # its gpu.sh finds the carried wheels, corpus, tokenizer
COMMON=(--dtypes bfloat16 --models minilm,bert-base --batch-sizes 256,1024)
LONG=(--dtypes bfloat16 --models bert-base --batch-sizes 512 --sentences 10005)

variants() { for v in $1; do echo --variant "$v"; done; }
has new-2001 && bench new-2001 "$REPO" "$REPO/.gpu-site" "${COMMON[@]}" $(variants "$VARIANTS")
if has pytest; then
  say "device tests on CUDA"
  # duckdb, and headdb laid out as its wheel has it (migrations and queries inside the package),
  # whether or not a benchmark step installed them
  TESTSITE=$REPO/.gpu-site-tests
  "$PY" -c 'import duckdb' 2>/dev/null || [ -d "$TESTSITE/duckdb" ] \
    || timeout 120 "$PY" -m pip install --quiet --no-index --no-deps --target "$TESTSITE" "$REPO"/.gpu/wheels/*.whl >> "$LOG" 2>&1
  rm -rf "$TESTSITE/headdb" && mkdir -p "$TESTSITE" && cp -r headdb "$TESTSITE/headdb" \
    && cp -r migrations "$TESTSITE/headdb/migrations" && cp -r queries "$TESTSITE/headdb/queries"
  # from /tmp: `python -m` puts the working directory first, and the checkout's headdb has no headdb.migrations
  (cd /tmp && PYTHONPATH=$TESTSITE:$REPO timeout 240 "$PY" -m pytest -q -p no:cacheprovider --rootdir "$REPO" \
    "$REPO/tests/test_sparsify_torch.py" "$REPO/tests/test_weight_bits.py") \
    > "$OUT/pytest-cuda.txt" 2>&1; say "pytest exit $? ($(tail -1 "$OUT/pytest-cuda.txt"))"
fi
[ -d "$BASE" ] && has base-2001 && bench base-2001 "$BASE" "$REPO/.gpu-site-base" "${COMMON[@]}" --no-variants
if has append; then  # from /tmp: `python -m` puts the working directory first, before the installed headdb
  say "append benchmark"
  (cd /tmp && PYTHONPATH=$REPO/.gpu-site:$REPO timeout 240 "$PY" -m benchmarks.append --corpus "$REPO/.gpu/corpus.conllu" \
    --tokenizer "$REPO/.gpu/tokenizer" --layers 12 --threads 16 --chunks 0,122880 --writers 1,2,4 \
    --memory default,768MiB --out "$OUT/append.json" "${APPEND_ARGS[@]}") 2>&1 | tee -a "$LOG"
fi
has new-10005 && bench new-10005 "$REPO" "$REPO/.gpu-site" "${LONG[@]}" $(variants "$VARIANTS_LONG")
[ -d "$BASE" ] && has base-10005 && bench base-10005 "$BASE" "$REPO/.gpu-site-base" "${LONG[@]}" --no-variants
say "done"
