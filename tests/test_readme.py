"""The README's two commands exist as written, and the main job they run works (slow)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"


def fenced_commands(text: str) -> list[str]:
    """Lines of the README's ```sh blocks."""
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def make_dry_run(target: str, **variables: str) -> list[str]:
    args = ["make", "-n", "-B", "-C", str(ROOT), target, *(f"{k}={v}" for k, v in variables.items())]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.strip() for line in out.stdout.splitlines() if line.strip() and not line.startswith("make")]


def test_the_python_the_readme_asks_for_is_the_one_pyproject_requires():
    """The README said Python 3.10+ after duckdb's floor (2.0.1, Requires-Python >=3.11) had
    left 3.10 without an install: the README's version and requires-python must agree."""
    readme = README.read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    required = re.search(r'^requires-python = ">=(3\.\d+)"', pyproject, flags=re.M).group(1)
    assert re.findall(r"Python (3\.\d+)\+", readme) == [required]


def test_the_readme_names_every_function_of_the_python_api():
    """headdb.connect, init, summary and export were in headdb.__all__ and nowhere in the README."""
    import headdb

    readme = README.read_text(encoding="utf-8")
    analysis = re.search(r"^- Python: .*?(?=^- |^## )", readme, flags=re.M | re.S).group(0)
    for name in headdb.__all__:
        if name not in ("__version__", "errors"):
            assert re.search(rf"\bheaddb\.{name}\b", readme) or f"`{name}`" in analysis, name


def test_readme_names_the_two_commands():
    commands = fenced_commands(README.read_text(encoding="utf-8"))
    assert "make demo" in commands
    assert "make test" in commands


def test_makefile_targets_exist_and_ci_calls_make_test():
    text = MAKEFILE.read_text()
    for target in ("setup", "demo", "test", "test-fast"):
        assert re.search(rf"^{re.escape(target)}:", text, flags=re.M), target
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", ci, flags=re.M)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_recipes_are_what_the_readme_says():
    setup = make_dry_run("setup")
    assert any("-m venv .venv" in c for c in setup)
    torch_at = next(i for i, c in enumerate(setup) if "pip install" in c and "torch==" in c)
    headdb_at = next(i for i, c in enumerate(setup) if "pip install" in c and "-e" in c and ".[dev]" in c)
    assert torch_at < headdb_at  # torch first, exactly
    demo = make_dry_run("demo", DEMO_DB="X.db")
    assert demo[-3:] == [".venv/bin/headdb ingest X.db", ".venv/bin/headdb summary X.db",
                         ".venv/bin/headdb classify X.db"]
    test = make_dry_run("test")
    assert test[-1] == ".venv/bin/python -m pytest"
    fast = make_dry_run("test-fast")
    assert fast[-1] == '.venv/bin/python -m pytest -m "not slow"'



_FAKE_PYTHON = """#!{executable}
# a Python {version}: logs its arguments as NAME, runs -c code, and `-m venv DIR` makes DIR/bin/python
import pathlib, sys
NAME = {name!r}
with open({log!r}, "a") as f:
    f.write(NAME + " " + " ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "-c":
    sys.version_info = {version!r}
    exec(sys.argv[2])
elif sys.argv[1:3] == ["-m", "venv"]:
    made = pathlib.Path(sys.argv[3], "bin", "python")
    made.parent.mkdir(parents=True, exist_ok=True)
    made.write_text(pathlib.Path(__file__).read_text().replace("NAME = " + repr(NAME), "NAME = " + repr("venv-" + NAME)))
    made.chmod(0o755)
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("old_version", [(3, 10, 13), (3, 11, 0)])
def test_make_setup_makes_anew_a_venv_of_a_python_older_than_required(tmp_path, old_version):
    """A first `make demo` where python3 was 3.10 left a .venv of 3.10 (pip then refused headdb),
    and `make demo PYTHON=python3.11`, as the README says, kept that .venv (`test -x`) and failed
    the same way: a .venv older than requires-python is made anew with PYTHON; one as new is kept."""
    import sys

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    required = re.search(r'^requires-python = ">=(3\.\d+)"', pyproject, flags=re.M).group(1)
    required = tuple(int(n) for n in required.split("."))
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    log = tmp_path / "calls.log"
    for path, name, version in ((tmp_path / ".venv" / "bin" / "python", "old", old_version),
                                (tmp_path / "py" / "python", "new", (*required, 0))):
        path.parent.mkdir(parents=True)
        path.write_text(_FAKE_PYTHON.format(executable=sys.executable, log=str(log), name=name, version=version),
                        encoding="utf-8")
        path.chmod(0o755)
    out = subprocess.run(["make", "-C", str(tmp_path), "setup", f"PYTHON={tmp_path / 'py' / 'python'}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    pip = [c for c in calls if " -m pip install" in c]
    assert len(pip) == 3, calls
    if old_version < required:
        assert [c for c in calls if "-m venv" in c] == ["new -m venv .venv --clear"], calls
        assert all(c.startswith("venv-new ") for c in pip), calls
    else:
        assert not any("-m venv" in c for c in calls), calls
        assert all(c.startswith("old ") for c in pip), calls


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_main_job_runs_as_make_demo_runs_it(tmp_path):
    """Runs the demo target's own commands (after set-up), on a database in tmp_path."""
    db = tmp_path / "demo.db"
    commands = [c for c in make_dry_run("demo", DEMO_DB=str(db)) if c.startswith(".venv/bin/headdb")]
    assert len(commands) == 3
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    outputs = []
    for command in commands:
        r = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, (command, r.stderr[-2000:])
        outputs.append(r.stdout)
    assert outputs[0].strip() == "1"  # the run id
    assert "run 1 (run-1, done): 300 sentences" in outputs[1]
    assert "0-based" in outputs[2] and "delimiter_cls:" in outputs[2]  # the classification
    con = duckdb.connect(str(db), read_only=True)
    layers = con.execute("SELECT layer, count(*) FROM edges GROUP BY layer ORDER BY layer").fetchall()
    run = con.execute("SELECT status, n_layers, n_heads, top_k, corpus_format FROM runs").fetchall()
    assert con.execute("SELECT count(*) FROM head_tests").fetchone()[0] == 10 * 6 * 12
    con.close()
    assert run == [("done", 6, 12, 8, "conllu")]
    assert [l for l, _ in layers] == list(range(6)) and len({n for _, n in layers}) == 1
    # the README's follow-up commands work on that database
    readme = fenced_commands(README.read_text(encoding="utf-8"))
    follow = [c for c in readme if c.startswith(".venv/bin/headdb ") and "demo.db" in c]
    assert follow, "the README shows .venv/bin/headdb commands on demo.db"
    for command in follow:
        r = subprocess.run(command.replace("demo.db", str(db)), shell=True, cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env=env)
        assert r.returncode == 0, (command, r.stderr[-2000:])


def _commands() -> list[tuple[str, object]]:
    """(full command name, click command) of every `headdb` command and sub-command."""
    import typer.main

    from headdb.cli import app

    group = typer.main.get_command(app)
    found = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            found += [(f"{name} {sub}", c) for sub, c in subs.items()]
        else:
            found.append((name, cmd))
    return found


def test_every_command_has_help_and_is_in_the_readme():
    readme = README.read_text(encoding="utf-8")
    commands = _commands()
    assert len(commands) >= 11
    for name, cmd in commands:
        assert (cmd.help or "").strip(), f"`headdb {name}` has no help text"
        if name.startswith("roles "):
            assert "headdb roles list" in readme and name.split()[1] in readme, name
        else:
            assert f"`headdb {name} " in readme or f"headdb {name} " in readme, f"`headdb {name}` is not in the README"
        for param in cmd.params:
            assert param.name == "help" or getattr(param, "help", None) or param.param_type_name == "argument", \
                f"`headdb {name}` option {param.name} has no help"


def test_the_command_table_names_every_option():
    """The README's command table fell behind --help (compare's --correction, report's --compare,
    ...): each command's row names every option it takes; ingest's many options are in its own
    section."""
    readme = README.read_text(encoding="utf-8")
    table = readme[readme.index("| command | what it does |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| `headdb (roles list\\\|show|[a-z]+)", line)
        if m:
            rows[m.group(1).replace("\\|", "|")] = line
    for name, cmd in _commands():
        row = rows.get("roles list|show" if name.startswith("roles ") else name)
        assert row is not None, f"no row for `headdb {name}` in the command table"
        where = readme if name == "ingest" else row
        for param in cmd.params:
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in where, f"`headdb {name}`: {opt} is not in its README row"


def test_every_builtin_role_is_in_the_readme():
    from headdb.roles import load_roles

    readme = README.read_text(encoding="utf-8")
    for role in load_roles():
        assert f"`{role.name}`" in readme, role.name


def test_every_test_the_reliability_table_names_exists():
    """`module::test` in the README's Reliability table: tests/test_reliability_module.py, or else
    tests/test_module.py, defines it (a `module::*` row needs the file only)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Reliability"):text.index("## Data and licences")]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    named = re.findall(r"`([a-z_0-9]+)::([a-z_0-9*]+)`", rows)
    assert len(named) > 30
    for module, test in named:
        files = [ROOT / "tests" / f"test_reliability_{module}.py", ROOT / "tests" / f"test_{module}.py"]
        path = next((f for f in files if f.exists()), None)
        assert path is not None, f"{module}::{test}: no {files[0].name} or {files[1].name}"
        if test != "*":
            assert re.search(rf"^def {re.escape(test)}\(", path.read_text(encoding="utf-8"), flags=re.M), \
                f"{module}::{test} is not in {path.name}"


def test_the_readme_says_how_to_run_one_test_the_slow_tier_and_update_golden_files():
    """`--update-golden` (tests/conftest.py) was documented nowhere but in a test's docstring, nor
    how to run one test or the slow tier; the examples the README gives must exist."""
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("## Run the tests"):readme.index("## The command line")]
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    options = re.findall(r'addoption\(\s*"(--[a-z-]+)"', conftest)
    assert options, "conftest.py adds no option any more: update this test"
    for opt in options:
        assert opt in section, f"{opt} (tests/conftest.py) is not in the README's Run the tests section"
    assert "-m slow" in section and "-k " in section
    for path, test in re.findall(r"`(tests/test_[a-z_]+\.py)(?:::([a-z_0-9]+))?`", section):
        assert (ROOT / path).is_file(), path
        if test:
            assert re.search(rf"^def {test}\(", (ROOT / path).read_text(encoding="utf-8"), flags=re.M), \
                f"{path}::{test}"
    for path in re.findall(r"`((?:migrations|queries/roles|headdb)/[A-Za-z_/.]*?)`", section):
        if "NNNN" not in path:
            assert (ROOT / path).exists(), path
