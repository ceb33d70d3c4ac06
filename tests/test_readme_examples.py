"""The README's Python example and its worked user-role example run as written (slow: bundled model)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from headdb.errors import DatabaseError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
HEADDB = Path(sys.executable).with_name("headdb")


def block(lang: str, index: int = 0) -> str:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)[index]


@pytest.mark.slow
def test_python_example_and_worked_role_example(tmp_path, monkeypatch):
    shutil.copy(ROOT / "tests" / "data" / "sample.conllu", tmp_path / "corpus.conllu")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block("python"), "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    run = scope["run"]
    assert run.sentences == 3 and run.edges > 0
    engine = scope["engine"]
    assert len(pd.read_sql("SELECT layer, head, avg(weight) FROM edges GROUP BY ALL", engine)) == 72
    # while the engine's pooled connection is open, headdb's own (other settings) cannot open
    # the file in this process: a clear error, not DuckDB's
    with pytest.raises(DatabaseError, match="already has the database open"):
        scope["headdb"].runs("store.db")
    engine.dispose()
    assert len(scope["headdb"].runs("store.db")) == 1

    # "Writing a role": the file exactly as shown, then the command exactly as shown
    role = block("sql")
    name = re.search(r"saved as `([^`]+)`", README).group(1)
    assert name == "my_roles/previous.sql"
    (tmp_path / "my_roles").mkdir()
    (tmp_path / name).write_text(role, encoding="utf-8")
    command = next(line for line in block("sh", _sh_index("--roles-dir my_roles")).splitlines()
                   if "--roles-dir my_roles" in line)
    args = command.split()
    assert args[0] == "headdb"
    out = subprocess.run([str(HEADDB), *args[1:]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    tests = pd.read_parquet(tmp_path / "tests.parquet")
    assert set(tests["role"]) == {"previous", "local"}
    assert len(tests) == 2 * 72  # two roles x 6 layers x 12 heads


def _sh_index(needle: str) -> int:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return next(i for i, b in enumerate(blocks) if needle in b)
