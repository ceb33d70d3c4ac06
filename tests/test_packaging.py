"""The wheel carries one copy of migrations/ and queries/ (mapped into headdb.*) and the sample."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_every_sql_file_and_the_sample(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("headdb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"headdb/migrations/{p.name}" for p in (ROOT / "migrations").glob("*.sql")}
    expected |= {f"headdb/queries/{p.relative_to(ROOT / 'queries').as_posix()}"
                 for p in (ROOT / "queries").rglob("*.sql")}
    expected |= {"headdb/data/ewt-dev-sample.conllu", "headdb/data/LICENSE-UD_English-EWT.txt", "headdb/py.typed"}
    assert expected - names == set()
