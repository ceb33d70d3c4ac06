#!/usr/bin/env bash
# Run HERE (a machine with PyPI access and the project's .venv) before benchmarks/gpu.sh goes to a
# GPU box that cannot reach the internet. Fills .gpu/ (git-ignored through .git/info/exclude, so
# pass it as a carried path): the duckdb wheel for the box's Python, the bundled model's tokenizer
# files, and the EWT dev corpus. About 30 MB. The model weights do not travel (88 MB): gpu.py
# builds random-weight models of the same shapes there, which time the same.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${GPU_PYTHON_VERSION:-3.12}
mkdir -p .gpu/wheels .gpu/tokenizer
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
DUCKDB=$(.venv/bin/python -c 'import duckdb; print(duckdb.__version__)')
timeout 300 python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels "duckdb==$DUCKDB"
MODEL=$(.venv/bin/python -c 'from headdb.resources import default_model; print(default_model())')
for f in tokenizer.json vocab.txt tokenizer_config.json special_tokens_map.json; do
  [ -f "$MODEL/$f" ] && cp "$MODEL/$f" .gpu/tokenizer/
done
CORPUS=${CORPUS:-/work/shared/corpora/en_ewt-ud-dev.conllu}
[ -f "$CORPUS" ] && cp "$CORPUS" .gpu/corpus.conllu
# BASELINE=<rev>: that commit's tree in .gpu/baseline, for benchmarks/gpu_compare.sh
if [ -n "${BASELINE:-}" ]; then
  rm -rf .gpu/baseline && mkdir -p .gpu/baseline
  git archive "$BASELINE" | tar -x -C .gpu/baseline
  git rev-parse "$BASELINE" > .gpu/baseline/REVISION
fi
du -sh .gpu
