"""The wheel carries one copy of migrations/ and queries/ (mapped into headdb.*) and the sample;
the sdist is the whole source tree; an installed wheel runs outside the repository.

The builds use the setuptools of this environment (no build isolation, no index), so that they
run offline, as everything else here does; without setuptools>=69 they are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", "*.db", "*.db.wal", "*.duckdb")


def _setuptools_or_skip() -> None:
    try:
        import setuptools
    except ImportError:  # pragma: no cover - a dev install has it
        pytest.skip("setuptools is not installed here; the build would download it")
    if int(setuptools.__version__.split(".")[0]) < 69:  # pragma: no cover
        pytest.skip(f"setuptools {setuptools.__version__} < 69 (pyproject's build requirement)")


def _clean_copy(tmp_path: Path) -> Path:
    """The source tree as a user's clone has it: no build leftovers, and no links from a checkout's
    headdb/ to migrations/ or queries/ (a contributor's shortcut that a clone lacks)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE, symlinks=True)
    for name in ("migrations", "queries"):
        if (src / "headdb" / name).is_symlink():
            (src / "headdb" / name).unlink()
    return src


def _tracked_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing tells which files are the source")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def _build_wheel(tmp_path: Path) -> Path:
    _setuptools_or_skip()
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dist), str(_clean_copy(tmp_path))],
                   check=True, capture_output=True)
    return next(dist.glob("headdb-*.whl"))


@pytest.mark.slow
def test_wheel_contains_every_sql_file_and_the_sample(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"headdb/migrations/{p.name}" for p in (ROOT / "migrations").glob("*.sql")}
    expected |= {f"headdb/queries/{p.relative_to(ROOT / 'queries').as_posix()}"
                 for p in (ROOT / "queries").rglob("*.sql")}
    expected |= {"headdb/data/ewt-dev-sample.conllu", "headdb/data/LICENSE-UD_English-EWT.txt",
                 "headdb/data/README.md", "headdb/py.typed"}
    assert expected - names == set()
    # the sample's licence is also in the metadata's licence files, beside headdb's own
    assert {"headdb-{v}.dist-info/licenses/LICENSE", "headdb-{v}.dist-info/licenses/headdb/data/LICENSE-UD_English-EWT.txt"
            } <= {n.replace(n.split("/")[0], "headdb-{v}.dist-info") for n in names if ".dist-info/" in n}


def test_sdist_holds_every_tracked_file(tmp_path):
    """setuptools' default sdist held tests/test_*.py but not conftest.py, tests/data, the golden
    files or the helper modules (its tests could not run), nor docs/ or the Makefile."""
    _setuptools_or_skip()
    tracked = _tracked_files()
    src = _clean_copy(tmp_path)
    out = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                          "print(b.build_sdist(sys.argv[1]))", str(tmp_path / "dist")],
                         cwd=src, capture_output=True, text=True, check=True)
    sdist = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz")
        names = {n.removeprefix(top + "/") for n in tar.getnames()}
    assert set(tracked) - names == set()
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db"))]


@pytest.mark.slow
def test_the_installed_wheel_runs_outside_the_repository(tmp_path):
    """The wheel's files alone (unpacked first on the path, the dependencies from this
    environment) serve `headdb --version`, `init` and `roles list` in a folder that is not the
    repository: migrations, role and framework SQL are read from the package."""
    wheel = _build_wheel(tmp_path)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = [sys.executable, "-c", "import sys, headdb; from headdb.cli import main; "
           "assert headdb.__file__.startswith(sys.argv[1]), headdb.__file__; sys.argv[1:2] = []; main()",
           str(site)]

    def headdb(*args: str) -> str:
        out = subprocess.run([*run, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    import headdb as here

    assert headdb("--version") == f"headdb {here.__version__}\n"
    assert f"Version: {here.__version__}\n" in zipfile.ZipFile(wheel).read(
        f"headdb-{here.__version__}.dist-info/METADATA").decode()
    assert "applied migrations 0001" in headdb("init", "x.db")
    assert "syntactic" in headdb("roles", "list", "--format", "csv")


def test_type_checkers_see_the_public_api():
    """headdb ships py.typed, but its API loads lazily through a module ``__getattr__``, which a
    type checker reads as ``-> Any``: ``headdb.ingest(...)`` and every other public call were
    untyped. The same names are imported under ``if TYPE_CHECKING:`` from the modules that
    ``__getattr__`` loads them from, and each has annotations for every parameter and its result."""
    import ast
    import importlib
    import inspect

    import headdb

    tree = ast.parse((ROOT / "headdb" / "__init__.py").read_text(encoding="utf-8"))
    blocks = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1, "headdb/__init__.py has no `if TYPE_CHECKING:` block of the API's imports"
    seen = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: import it `as {alias.name}` (an explicit re-export)"
            seen[alias.name] = node.module
    assert seen == headdb._API
    untyped = []
    for name, module in headdb._API.items():
        sig = inspect.signature(getattr(importlib.import_module(module), name))
        untyped += [f"{name}({p.name})" for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty:
            untyped.append(f"{name} -> ?")
    assert untyped == []


def test_errors_are_reachable_right_after_import_headdb():
    """README: every error headdb raises is a ``headdb.errors.HeaddbError``. After a bare
    ``import headdb`` (no API call yet, a fresh process) ``headdb.errors`` was an AttributeError,
    so ``except headdb.errors.InputError`` in a notebook's first cell failed on its own."""
    code = "import headdb; print(headdb.errors.HeaddbError.__name__, 'errors' in headdb.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT).stdout
    assert out == "HeaddbError True\n"


def test_dir_lists_the_api_before_it_is_loaded():
    """The API loads lazily (module ``__getattr__``), so ``dir(headdb)`` in a fresh process listed
    none of it (['Any', 'TYPE_CHECKING', ...]): a notebook's tab completion offered no function."""
    code = "import headdb; print(sorted(set(headdb.__all__) - set(dir(headdb))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT).stdout
    assert out == "[]\n"
