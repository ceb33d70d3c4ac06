"""The `headdb` command: exit codes and output. Runs the installed entry point in subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_main

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
HEADDB = Path(sys.executable).parent / "headdb"


def headdb(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    return subprocess.run([str(HEADDB), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)




def test_entry_point_installed():
    assert HEADDB.exists(), f"{HEADDB}: run `make setup` first"


def test_version_is_the_packages_one_version(capsys, monkeypatch):
    """`headdb --version` printed nothing (no such option); the version is written once, in
    headdb/__init__.py, and pyproject.toml reads it from there."""
    import headdb

    code, out, err = run_main(capsys, monkeypatch, "--version")
    assert (code, out, err) == (0, f"headdb {headdb.__version__}\n", "")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic = \["version"\]', pyproject, flags=re.M)
    assert 'version = {attr = "headdb.__version__"}' in pyproject
    assert not re.search(r"^version = ", pyproject.split("[tool.")[0], flags=re.M)


def test_python_dash_m_headdb_is_the_command():
    """`python -m headdb` failed (no __main__); it runs the command, as the entry point does."""
    out = subprocess.run([sys.executable, "-m", "headdb", "--version"], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.startswith("headdb ")
    bad = subprocess.run([sys.executable, "-m", "headdb", "runs", "/nonexistent/x.db"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: "), bad.stderr


def test_a_closed_standard_output_is_refused_before_any_work(tmp_path):
    """With stdout closed (`>&-`) Python drops every write to it: `headdb roles` and `runs`
    exited 0 with their results gone, and `sql -f csv` died with an AttributeError traceback."""
    import shlex

    store = tmp_path / "s.db"
    from headdb.db import init

    init(store)
    for args in (["roles"], ["sql", str(store), "SELECT 1", "-f", "csv"], ["init", str(tmp_path / "new.db")]):
        line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "headdb", *args])
        done = subprocess.run(["bash", "-c", line + " >&-"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("error: standard output is closed (>&-)"), done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "new.db").exists()  # refused before it did anything


def _piped(args: list, reader: str, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """`headdb ARGS | READER` under bash's pipefail: the pipeline's status is headdb's where it
    failed, as a script with `set -o pipefail` sees it."""
    import shlex

    line = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "headdb", *args])
    return subprocess.run(["bash", "-c", f"set -o pipefail; {line} | {reader}"], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_closes_the_pipe_early_ends_headdb_quietly_with_141(tmp_path, unbuffered):
    """`headdb sql ... | head` exited 1 without a word where it printed a table (click and rich
    each turned the broken pipe into exit 1), 0 for the same rows as CSV (or its rows were cut
    short unseen under PYTHONUNBUFFERED), and a flush at exit could print Python's "Exception
    ignored": now every command ends as `cat` does, quietly, with 128 + SIGPIPE."""
    from headdb.db import init

    store = tmp_path / "s.db"
    init(store)
    env = {"PYTHONUNBUFFERED": unbuffered}  # empty: buffered, whatever the test's own environment says
    rows = "SELECT range AS i, 'caf\u00e9 ' || range AS word FROM range(200000)"
    for args, reader in ((["sql", store, rows, "--max-rows", "0"], "head -2"),
                         (["sql", store, rows, "-f", "csv"], "head -2"),
                         (["sql", store, rows, "-f", "json"], "head -c 100"),
                         (["roles", "show", "nsubj"], "true"),
                         (["--help"], "true"),
                         (["roles", "list"], "true")):
        done = _piped(args, reader, env=env)
        assert done.returncode == 141, (args, done.returncode, done.stderr)
        assert "error" not in done.stderr and "Traceback" not in done.stderr and "Exception" not in done.stderr, args
    whole = _piped(["sql", store, rows, "-f", "csv"], "wc -l", env=env)  # a reader that reads it all: all of it
    assert (whole.returncode, whole.stdout.strip(), whole.stderr) == (0, "200001", "")


def test_a_closed_pipe_on_windows_ends_headdb_as_a_reader_gone(monkeypatch):
    """On Windows a write to a pipe whose reader has gone often raises OSError EINVAL, not
    BrokenPipeError (python/cpython#79935): `headdb sql ... | more` that stopped early said
    "error: standard output: Invalid argument" and exited 1. It is the reader gone there (exit
    141, quietly); elsewhere EINVAL stays an error that names the stream."""
    import errno
    import io

    from headdb import cli

    class Closed(io.StringIO):
        def write(self, text):
            raise OSError(errno.EINVAL, "Invalid argument")

    guarded = cli._Guarded(Closed(), "standard output")
    with pytest.raises(OSError, match="Invalid argument: 'standard output'"):
        guarded.write("a\n")
    raised = None
    with monkeypatch.context() as windows:  # os.name "nt" only for the write: pathlib reads it too
        windows.setattr(os, "name", "nt")
        try:
            guarded.write("a\n")
        except Exception as exc:  # noqa: BLE001 - asserted below, with os.name restored
            raised = exc
    assert isinstance(raised, cli._ReaderGone), repr(raised)


def test_a_full_device_names_standard_output(tmp_path):
    """`headdb roles > /dev/full` said "error: No space left on device", which named nothing."""
    import shlex

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    from headdb.db import init

    store = tmp_path / "s.db"
    init(store)
    for args in (["roles", "list"], ["sql", store, "SELECT * FROM range(100000)", "-f", "csv"], ["--version"]):
        line = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "headdb", *args])
        done = subprocess.run(["bash", "-c", line + " >/dev/full"], capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (1, "error: standard output: No space left on device\n"), args


def test_a_stdout_that_is_not_utf8_gets_an_ascii_table_and_a_question_mark_per_missing_character(tmp_path):
    """`PYTHONIOENCODING=ascii headdb sql ...` (or latin-1) died with a UnicodeEncodeError
    traceback on the table's box drawing, and on "café" or CJK in a result. The table is drawn
    as rich draws it for such a stream (+, - and |), each character the encoding lacks is a "?",
    and the columns stay aligned; an error handler given with the encoding is kept."""
    from headdb.db import init

    store = tmp_path / "s.db"
    init(store)
    query = "SELECT 'caf\u00e9 na\u00efve \u6f22\u5b57' AS word, 1 AS n"
    for encoding, word in (("ascii", "caf? na?ve ??"), ("latin-1", "caf\u00e9 na\u00efve ??"),
                           ("ascii:backslashreplace", "caf\\xe9 na\\xefve \\u6f22\\u5b57")):
        done = subprocess.run([sys.executable, "-m", "headdb", "sql", store, query], capture_output=True,
                              timeout=120, env=dict(os.environ, PYTHONIOENCODING=encoding))
        assert (done.returncode, done.stderr) == (0, b""), (encoding, done.stderr.decode(errors="replace"))
        lines = done.stdout.decode(encoding.split(":")[0]).splitlines()
        assert lines[0].startswith("+-") and lines[2].startswith("|-") and "+" in lines[2], lines
        assert lines[3] == f"| {word} | 1 |", lines
        assert len({len(line) for line in lines}) == 1, lines  # aligned
    listed = subprocess.run([sys.executable, "-m", "headdb", "roles", "list"], capture_output=True, timeout=120,
                            env=dict(os.environ, PYTHONIOENCODING="ascii"))
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr and b"| nsubj" in listed.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from headdb.cli import app\n"
        "for args in (['--help'], ['ingest', '--help'], ['sql', '--help'], ['runs', '--help'], ['init', '--help']):\n"
        "    try:\n"
        "        app(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'spacy', 'scipy') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="
    assert "ingest" in out.stdout and "--top-k" in out.stdout


def test_help_lists_every_command():
    r = headdb("--help")
    assert r.returncode == 0
    for command in ("init", "ingest", "runs", "summary", "sql"):
        assert command in r.stdout


def _all_commands() -> list:
    """(arguments, click command) of every `headdb` command and sub-command."""
    import typer.main

    from headdb.cli import app

    group = typer.main.get_command(app)
    commands = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        commands += [([name, sub], c) for sub, c in subs.items()] if subs else [([name], cmd)]
    return commands


def test_every_option_help_reads_in_help_as_written():
    """`headdb classify --help` showed `--tau` as "Threshold of H1: E > tau": rich took `[score]`
    in "E[score]" for markup and dropped it. Every option's help text shows in full."""
    from typer.testing import CliRunner

    from headdb.cli import app

    runner = CliRunner()
    for args, cmd in _all_commands():
        r = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "1000"}, terminal_width=1000)
        assert r.exit_code == 0, (args, r.output)
        shown = " ".join(r.output.split())
        for param in cmd.params:
            text = " ".join((getattr(param, "help", None) or "").split())
            assert text in shown, f"`headdb {' '.join(args)} --help` lost part of {param.name}'s help: {text!r}"


def test_each_commands_summary_is_one_line_in_the_command_list():
    """`headdb --help` listed compact as "... (DuckDB only reuses it otherwise); a" with the rest
    on a line of its own: rich keeps a docstring's line breaks, so a command's first paragraph
    (its row in the list) is one line."""
    from typer.testing import CliRunner

    from headdb.cli import app

    for args, cmd in _all_commands():
        first = (cmd.help or "").strip().split("\n\n")[0]
        assert "\n" not in first, f"`headdb {' '.join(args)}`: {first!r}"
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0
    assert "otherwise); a" not in r.output


def test_init_sql_and_errors_without_a_model(tmp_path, capsys, monkeypatch):
    def headdb(*args):
        code, out, err = run_main(capsys, monkeypatch, *args)
        return subprocess.CompletedProcess(args, code, out, err)

    db = tmp_path / "a.db"
    r = headdb("init", db)
    assert r.returncode == 0 and "applied migrations 0001" in r.stdout
    r = headdb("init", db)
    assert r.returncode == 0 and "up to date" in r.stdout
    r = headdb("sql", db, "SELECT count(*) AS n FROM edges", "--format", "csv")
    assert (r.returncode, r.stdout) == (0, "n\n0\n")
    r = headdb("sql", db, "SELECT 1 AS x, 'a' AS y", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"x": 1, "y": "a"}]
    r = headdb("runs", db, "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = headdb("runs", db)  # an empty table said nothing
    assert (r.returncode, r.stdout) == (0, "") and f"{db} has no runs yet: `headdb ingest {db} CORPUS`" in r.stderr
    # one clear line on stderr and exit code 1 for headdb errors
    for args, message in [
        (("sql", db, "SELEC nonsense"), "SQL error"),
        (("sql", db, "DELETE FROM runs"), "add --write"),  # read-only by default
        (("sql", db, "--write", "DELETE FROM edges WHERE run_id = 3"), "rows of edge_store"),  # a view
        (("sql", db, "--write", "UPDATE edges SET weight = 0"), "rows of edge_store"),
        (("runs", tmp_path / "missing.db"), "no such database"),
        (("summary", db), "no finished run"),
        (("ingest", db, tmp_path / "missing.conllu"), "no such file"),
        (("ingest", db, DATA / "sample.conllu", "--format", "xml"), "unknown format"),
        (("ingest", db, DATA / "sample.conllu", "--model", "no-such-org/no-such-model-xyz"), "not a local folder"),
    ]:
        r = headdb(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and message in lines[0], (args, r.stderr)
        if "SQL error" not in lines[0]:  # SQL errors may add DuckDB's caret pointing into the query
            assert len(lines) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "missing.db").exists()
    r = headdb("sql", db, "--write", "DELETE FROM edge_store WHERE run_id = 3")
    assert r.returncode == 0, r.stderr
    r = headdb("sql", db, "SELECT 1", "--format", "xml")
    assert r.returncode == 2 and "--format" in r.stderr
    with pytest.raises(Exception, match="SQL error"):  # --debug: the exception propagates (traceback)
        headdb("--debug", "sql", db, "SELEC nonsense")
    from headdb.cli import _state
    _state["debug"] = False
    r = headdb("ingest")
    assert r.returncode == 2 and "Missing argument" in r.stderr and "Traceback" not in r.stderr
    r = headdb("ingest", db, "--top-k", "abc")
    assert r.returncode == 2 and "--top-k" in r.stderr
    r = headdb("no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr


def test_sql_with_the_store_and_the_query_swapped_or_the_query_in_a_file(tmp_path, capsys, monkeypatch):
    """`headdb sql "SELECT ..." store.db` read "no such database (create it with `headdb init
    'SELECT ...'`)"; `headdb sql store.db query.sql` a bare parser error at "query"."""
    db = tmp_path / "a.db"
    assert run_main(capsys, monkeypatch, "init", db)[0] == 0
    code, out, err = run_main(capsys, monkeypatch, "sql", "SELECT count(*) FROM runs", db)
    assert (code, out) == (1, "")
    assert err == (f"error: SELECT count(*) FROM runs: no such database, and the query names a file, {db}: the "
                   "database comes first, then the query (`headdb sql DB QUERY`)\n")
    assert not (tmp_path / "SELECT count(*) FROM runs").exists()
    query = tmp_path / "q.sql"
    query.write_text("SELECT 1\n")
    for extra in ([], ["-f", "csv"], ["--out", tmp_path / "x.csv"]):
        code, out, err = run_main(capsys, monkeypatch, "sql", db, query, *extra)
        assert (code, out) == (1, "") and err.startswith("error: SQL error: Parser Error: ")
        assert err.splitlines()[-1] == (f"(the query is SQL text, and {query} is a file: to run the SQL in it, pass "
                                        f'its text: `headdb sql DB "$(cat {query})"`)'), err
    # the order is right where the store is missing and the query is a file of SQL, not a store
    code, out, err = run_main(capsys, monkeypatch, "sql", tmp_path / "missing.db", query)
    assert (code, out) == (1, "") and "comes first" not in err and "no such database" in err, err
    code, _, err = run_main(capsys, monkeypatch, "sql", db, "SELEC 1")  # no file: DuckDB's words alone
    assert code == 1 and "is a file" not in err
    import headdb

    with pytest.raises(headdb.errors.DatabaseError, match=r"pass its text: Path\("):
        headdb.sql(db, str(query))


def test_sql_format_that_disagrees_with_out_is_refused(tmp_path, capsys, monkeypatch):
    """`headdb sql DB Q --out x.csv -f json` wrote CSV and ignored -f without a word; -f that
    agrees with the extension is fine."""
    db = tmp_path / "a.db"
    assert run_main(capsys, monkeypatch, "init", db)[0] == 0
    code, out, err = run_main(capsys, monkeypatch, "sql", db, "SELECT 1 AS x", "--out", tmp_path / "x.csv", "-f", "json")
    assert (code, out) == (1, "")
    assert err == (f"error: --format json and --out {tmp_path / 'x.csv'} disagree: the extension of --out decides "
                   "the file's format; name the file x.json, or leave out --format\n")
    assert not (tmp_path / "x.csv").exists()
    code, _, err = run_main(capsys, monkeypatch, "sql", db, "SELECT 1 AS x", "--out", tmp_path / "y.csv", "-f", "csv")
    assert code == 0 and (tmp_path / "y.csv").read_text().splitlines() == ["x", "1"], err


def test_writing_the_edges_view_says_which_tables_and_that_the_store_opens_read_only(tmp_path, capsys, monkeypatch):
    """`headdb sql DB "DELETE FROM edges"` explained the view but not that the store opens
    read-only, the next error the user would meet."""
    db = tmp_path / "a.db"
    assert run_main(capsys, monkeypatch, "init", db)[0] == 0
    view = ("(edges is a view that reads the tables edge_store (float32 weights) and edge_store16 (16-bit weights); "
            "delete, update or insert rows of edge_store or edge_store16")
    code, _, err = run_main(capsys, monkeypatch, "sql", db, "DELETE FROM edges")
    assert code == 1 and err.rstrip().endswith(view + ", with --write, or write=True: the store opens read-only)"), err
    code, _, err = run_main(capsys, monkeypatch, "sql", db, "DELETE FROM edges", "--write")
    assert code == 1 and err.rstrip().endswith(view + ")"), err


def test_usage_errors_exit_2_without_traceback(tmp_path):
    # through the real entry point: usage errors come from typer's (vendored) click
    r = headdb("sql", tmp_path / "x.db", "SELECT 1", "--format", "xml")
    assert r.returncode == 2 and "--format" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ingest_runs_sql_summary_with_a_tiny_model(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    db = tmp_path / "t.db"
    # once through the installed entry point ...
    r = headdb("ingest", db, DATA / "sample.conllu", "--model", tiny_bert_dir, "--top-k", "3", "--run-name", "tiny")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\n"  # stdout is the run id alone, for scripts
    assert "run 1 (tiny): stored 3 sentences" in r.stderr

    # ... the rest in-process (each subprocess pays for importing torch again)
    def cli(*args):
        code, out, err = run_main(capsys, monkeypatch, *args)
        return subprocess.CompletedProcess(args, code, out, err)

    r = cli("ingest", db, DATA / "sample.conllu", "--model", tiny_bert_dir, "--top-k", "3", "--run-name", "tiny")
    assert r.returncode == 0 and r.stdout == "1\n" and "already complete" in r.stderr
    r = cli("ingest", db, DATA / "sample.conllu", "--pairs", "--model", tiny_bert_dir, "-q")
    assert r.returncode == 0 and r.stdout == "2\n" and "odd last sentence" in r.stderr

    r = cli("ingest", db, DATA / "sample.txt", "--model", tiny_bert_dir, "--limit", "2", "--max-length", "8")
    assert r.returncode == 0 and r.stdout == "3\n"
    assert "stored 1 sentence," in r.stderr and "skipped 1 over-long" in r.stderr
    assert "2 blank lines ignored, 0 over-long lines skipped" in r.stderr
    one_blank = tmp_path / "one_blank.txt"
    one_blank.write_text("The cat sat.\n\nA dog barked loudly at the cat.\n")
    r = cli("ingest", tmp_path / "one_blank.db", one_blank, "--model", tiny_bert_dir, "-q")
    assert r.returncode == 0 and "1 blank line ignored, 0 over-long lines skipped" in r.stderr, r.stderr

    r = cli("runs", db, "--format", "json")
    assert r.returncode == 0
    runs = json.loads(r.stdout)
    assert [(x["run_id"], x["run_name"], x["status"], x["pairs"]) for x in runs] == [
        (1, "tiny", "done", False), (2, "run-2", "done", True), (3, "run-3", "done", False)]
    assert (runs[2]["sentence_limit"], runs[2]["n_sentences"], runs[2]["n_skipped"]) == (2, 1, 1)
    assert runs[0]["model"] == str(tiny_bert_dir) and runs[0]["top_k"] == 3
    r = cli("runs", db, "--format", "csv")
    assert r.returncode == 0 and len(list(csv.DictReader(io.StringIO(r.stdout)))) == 3
    r = cli("runs", db)
    assert r.returncode == 0 and "tiny" in r.stdout
    # the table leaves out the columns where every run has the default, and says which on stderr
    assert "pairs" in r.stdout and "skipped" in r.stdout and "top_k" in r.stdout
    assert not any(c in r.stdout for c in ("min_mass", "dense", "weight_bits", "truncated"))
    assert "every run has the default min_mass, dense, weight_bits, truncated; --all" in r.stderr
    r = cli("runs", db, "--all")
    assert r.returncode == 0 and all(c in r.stdout for c in ("min_mass", "dense", "weight_bits", "n_truncated"))
    assert "default" not in r.stderr

    q = "SELECT layer, count(*) AS edges FROM edges WHERE run_id = 1 GROUP BY layer ORDER BY layer"
    r = cli("sql", db, q, "--format", "csv")
    assert r.returncode == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["layer"] for row in rows] == ["0", "1"]
    assert rows[0]["edges"] == rows[1]["edges"] and int(rows[0]["edges"]) > 0
    r = cli("sql", db, q, "--format", "json")
    assert r.returncode == 0 and [x["layer"] for x in json.loads(r.stdout)] == [0, 1]
    out = tmp_path / "layers.parquet"
    r = cli("sql", db, q, "--out", out)
    assert r.returncode == 0 and out.exists()

    r = cli("summary", db, "--run", "tiny")
    assert r.returncode == 0 and "run 1 (tiny, done): 3 sentences" in r.stdout
    table = r.stdout
    r = cli("summary", db, "--run", "tiny", "-f", "json")
    whole = json.loads(r.stdout)
    assert (whole["run_id"], whole["run_name"], whole["sentences"], whole["status"]) == (1, "tiny", 3, "done")
    assert [x["layer"] for x in whole["layers"]] == [0, 1] and sum(x["edges"] for x in whole["layers"]) == whole["edges"]
    assert f"{whole['edges']:,} edges" in table
    r = cli("summary", db, "--run", "tiny", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["run_id"], x["run_name"], x["layer"], int(x["edges"])) for x in rows] \
        == [("1", "tiny", str(x["layer"]), x["edges"]) for x in whole["layers"]]
    assert abs(float(rows[0]["kept_mass"]) - whole["layers"][0]["kept_mass"]) < 1e-12
    r = cli("summary", db, "--run", "nope")
    assert r.returncode == 1 and "no run 'nope'" in r.stderr


def test_tables_never_cut_a_value_short(monkeypatch, capsys):
    """Piped output puts each row on one line however wide; in a narrow terminal a long value
    wraps inside its cell. Neither shortens a value to an ellipsis."""
    import pandas as pd
    from rich.console import Console

    from headdb import cli

    long = "/a/rather/long/path/to/some/model/folder/that/is/wider/than/any/terminal/" * 2
    df = pd.DataFrame({"run_id": [1, 2], "model": [long, "short"], "mean": [0.123456789, 2.0]})
    monkeypatch.delenv("COLUMNS", raising=False)
    cli._print_df(df)
    out = capsys.readouterr().out
    assert "…" not in out
    assert any(long in line and "0.123457" in line for line in out.splitlines())

    screen = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=screen, force_terminal=True, width=60, color_system=None))
    cli._print_df(df[["run_id", "mean"]])  # fits: a table
    assert "┃ run_id ┃" in screen.getvalue() and "0.123457" in screen.getvalue()
    screen.truncate(0)
    screen.seek(0)
    cli._print_df(df, title="runs")  # too wide for 60 columns: a block per row, every value whole
    lines = screen.getvalue().splitlines()
    def bar(n: int) -> str:
        return f"-[ row {n} ]".ljust(18, "-")  # as wide as the longest column name (6) + 12

    assert lines[:5] == ["runs", bar(1), "run_id | 1", f"model  | {long}", "mean   | 0.123457"]
    assert lines[5:] == [bar(2), "run_id | 2", "model  | short", "mean   | 2"]
    assert "…" not in screen.getvalue()


def test_dense_with_an_explicit_top_k_is_refused(tmp_path, capsys, monkeypatch):
    """--dense keeps every key: a --top-k beside it was ignored without a word (--min-mass was refused)."""
    code, _, err = run_main(capsys, monkeypatch, "ingest", tmp_path / "d.db", "--dense", "--top-k", "4")
    assert code == 1 and err == "error: --dense keeps every key; it cannot be combined with --top-k\n", err
    assert not (tmp_path / "d.db").exists()


def test_option_errors_name_flags_under_the_cli_and_parameters_from_python(tmp_path, capsys, monkeypatch):
    """The library's messages said `--top-k` to a Python caller; each surface now names its own
    spelling, and a command leaves the Python spelling behind it."""
    import headdb
    from headdb.errors import InputError

    db = tmp_path / "o.db"
    cases = [(["--top-k", "0"], {"top_k": 0}, "{} must be at least 1", ("--top-k", "top_k")),
             (["--min-mass", "2"], {"min_mass": 2.0}, "{} must be a share", ("--min-mass", "min_mass")),
             (["--weight-bits", "8"], {"weight_bits": 8}, "{} must be 32 or 16", ("--weight-bits", "weight_bits")),
             (["--parse-processes", "0"], {"parse_processes": 0}, "{} must be a whole number", ("--parse-processes", "parse_processes")),
             (["--dense", "--weight-bits", "16"], {"dense": True, "weight_bits": 16}, "{} stores float32", ("--dense", "dense=True"))]
    for args, kwargs, words, (cli_name, python_name) in cases:
        code, _, err = run_main(capsys, monkeypatch, "ingest", db, *args)
        assert code == 1 and err.startswith("error: " + words.format(cli_name)), (args, err)
        with pytest.raises(InputError, match="^" + re.escape(words.format(python_name))):
            headdb.ingest(db, **kwargs)
    code, _, err = run_main(capsys, monkeypatch, "classify", db, "--alpha", "2")
    assert code == 1 and "--alpha must be between 0 and 1, not 2.0" in err, err
    with pytest.raises(InputError, match="^alpha must be between 0 and 1, not 2"):
        headdb.classify(db, alpha=2)
    assert not db.exists()


def test_run_errors_name_the_store(tmp_path, capsys, monkeypatch):
    """With several stores open in a session, "no run '7' in the database" did not say which."""
    from headdb.db import init

    db = tmp_path / "a.db"
    init(db)
    code, _, err = run_main(capsys, monkeypatch, "summary", db)
    assert (code, err) == (1, f"error: {db} has no finished run; ingest a corpus first\n")
    code, _, err = run_main(capsys, monkeypatch, "summary", db, "--run", "7")
    assert (code, err) == (1, f"error: no run '7' in {db} (see `headdb runs {db}`)\n")


def test_missing_values_are_blank_in_every_column_type():
    """A dense run's top_k showed `<NA>` (a nullable integer column) where min_mass showed a blank."""
    import pandas as pd

    from headdb.cli import _cell

    df = pd.DataFrame({"top_k": pd.Series([8, None], dtype="Int64"), "min_mass": [0.9, None],
                       "when": pd.Series([pd.Timestamp("2026-11-27"), pd.NaT]), "name": ["a", None]})
    assert [_cell(v) for v in df.iloc[1]] == ["", "", "", ""]
    assert [_cell(v) for v in df.iloc[0]] == ["8", "0.9", "2026-11-27 00:00:00", "a"]


def test_a_table_title_is_one_line_above_a_narrow_table(monkeypatch):
    """In a terminal, `headdb summary`'s title wrapped over three lines to its table's width."""
    import io

    import pandas as pd
    from rich.console import Console

    from headdb import cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=screen, width=100, force_terminal=True,
                                                         color_system=None))
    title = "edges and mean kept attention mass per row, by layer (0-based)"
    cli._print_df(pd.DataFrame({"layer": [0, 1], "edges": [10, 12]}), title=title)
    lines = screen.getvalue().splitlines()
    assert lines[0] == title and "layer" in lines[2]


def test_cells_are_text_not_markup(capsys):
    """A value such as "[link]" printed as an empty cell: rich read it as markup."""
    import pandas as pd

    from headdb import cli

    cli._print_df(pd.DataFrame({"[b]": ["[link]", "[bold]x[/bold]"]}))
    out = capsys.readouterr().out
    assert "[link]" in out and "[bold]x[/bold]" in out and "[b]" in out


@pytest.mark.parametrize("terminal", [False, True])
def test_tables_are_drawn_as_rich_draws_them(monkeypatch, capsys, terminal):
    """Tables are drawn by headdb (rich took 15 s of CPU to print 20,000 rows; CSV 1 s), line for
    line as rich's default table: text left, numbers right (their headers too), wide characters
    counted as two cells, blanks for missing values."""
    import io

    import pandas as pd
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from headdb import cli

    df = pd.DataFrame({"role": ["local", "名前", "", None], "n": [3, 12, None, 4],
                       "mean": [0.5, 1 / 3, float("nan"), 2e-9], "note": ["[link]", "x", "über", "a b"]})
    screen = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=screen, force_terminal=terminal, width=120,
                                                         color_system=None))
    cli._print_df(df)
    ours = screen.getvalue() if terminal else capsys.readouterr().out  # piped: a console of its own on stdout
    table = Table(show_lines=False)
    for name in df.columns:
        table.add_column(Text(name), justify="right" if df[name].dtype.kind in "iuf" else "left", overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(Text(cli._cell(v)) for v in row))
    reference = io.StringIO()
    Console(file=reference, force_terminal=terminal, width=120, color_system=None).print(table)
    assert ours == reference.getvalue()
    assert "│ 名前  │" in ours and "0.333333" in ours


def test_an_ascii_table_is_drawn_as_rich_draws_it(monkeypatch):
    """On a stdout that is not UTF (PYTHONIOENCODING=ascii), rich draws its tables of + - |;
    headdb's own drawing, of box characters only, raised UnicodeEncodeError there."""
    import io

    import pandas as pd
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from headdb import cli

    def ascii_console(stream):
        return Console(file=stream, force_terminal=True, width=120, color_system=None)

    df = pd.DataFrame({"role": ["local", "nsubj"], "n": [3, 12]})
    ours = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="replace")
    monkeypatch.setattr(cli, "_console", lambda: ascii_console(ours))
    cli._print_df(df)
    table = Table(show_lines=False)
    table.add_column(Text("role"))
    table.add_column(Text("n"), justify="right")
    for role, n in zip(df["role"], df["n"]):
        table.add_row(Text(role), Text(str(n)))
    reference = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="replace")
    ascii_console(reference).print(table)
    ours.flush()
    reference.flush()
    assert ours.buffer.getvalue() == reference.buffer.getvalue() and ours.buffer.getvalue().startswith(b"+--")


def test_a_slow_ingest_does_not_read_0_sentences_a_second():
    from headdb.cli import _rate

    assert [_rate(x) for x in (0.0031, 3.14159, 282.2, 1234.5)] == ["0.0031", "3.1", "282", "1,234"]
    from headdb.cli import _seconds

    # a short ingest read "in 0.0 s (81 sentences/s)"
    assert [_seconds(x) for x in (0.037, 0.5, 8.05, 1234.56)] == ["0.037", "0.5", "8.1", "1,234.6"]


def test_the_count_of_rows_written_shows_from_the_second_batch_on_a_terminal_only(monkeypatch):
    """sql --out's count of rows: none for an export of one batch, none with -q or off a terminal."""
    from rich.progress import Progress

    from headdb import cli

    events: list[str] = []
    monkeypatch.setattr(Progress, "start", lambda self: events.append("start"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with cli._rows_count("writing x.csv", False) as progress:
        progress(100)
        assert events == []
        progress(200)
        assert events == ["start"]
    with cli._rows_count("writing x.csv", True) as progress:
        assert progress is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with cli._rows_count("writing x.csv", False) as progress:
        assert progress is None
