"""The benchmark entry points run (a smoke test: no timings are checked; see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_benchmark_suite_quick(tmp_path):
    out = tmp_path / "results.json"
    r = _run(["-m", "benchmarks", "--quick", "--sentences", "6", "--fidelity-sentences", "4", "--scale-base", "2",
              "--only", "ingestion,storage,classify", "--no-text", "--workdir", str(tmp_path / "w"),
              "--out", str(out)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["ingestion"]["conllu"]["end_to_end_sps"] > 0
    assert data["storage"]["edges"] > 0 and data["storage"]["edges_table_bytes_per_edge"] > 0
    assert "| measure | value | target |" in r.stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu(tmp_path):
    r = _run(["-m", "benchmarks.gpu", "--device", "cpu", "--tiny", "--dtypes", "float32", "--batch-sizes", "4",
              "--sentences", "6", "--no-variants", "--out", str(tmp_path)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu-results.json").read_text())["rows"]
    assert rows and rows[0]["sentences"] == 6
    assert {"forward", "topk", "write"} <= set(rows[0]["stages_s"])
