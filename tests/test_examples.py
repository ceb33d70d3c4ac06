"""The fine-tuning example is runnable as shipped (its full run is recorded in docs/finetune-example.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_finetune_example_help():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "finetune_compare.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--epochs" in r.stdout and "--train" in r.stdout


def test_finetune_doc_records_a_run():
    text = (ROOT / "docs" / "finetune-example.md").read_text(encoding="utf-8")
    assert "examples/finetune_compare.py" in text and "UPOS accuracy" in text
