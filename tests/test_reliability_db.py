"""Reliability (#6): SQL injection and concurrent use of one database file.

Values from the command line (run names, paths, role names) are bound parameters or quoted
identifiers, never SQL text. A database that another process writes gives a clear "locked by
process N" line to writers and readers alike; read-only commands work when no writer holds it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "sample.conllu"
HOSTILE = "x'; DROP TABLE edges; --"




def tables(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


@pytest.fixture
def db(tmp_path) -> Path:
    from headdb.db import init

    path = tmp_path / "store.db"
    init(path)
    return path


# --- injection ---------------------------------------------------------------------------------

#: What may be spliced into SQL text in headdb's code: quoted identifiers, module constants, and
#: SQL built by headdb itself (role bodies are files that the role loader validates).
_ALLOWED_SPLICES = re.compile(
    r"^(quote_ident\(.*\)|[A-Z_][A-Z0-9_]*|_?[a-z_]*(sql|view|relation|cols|table|_deps)|"
    r"(sieve_sql|framework_sql|fill)\(.*\)|.*join\(.*quote_ident.*\))$")
_SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|WITH|SET|RESET|COPY|ATTACH|PRAGMA|"
                        r"ALTER|FROM|WHERE|AND|OR)\b", re.I)


def _fstring_sql(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if _SQL_START.search(text) or re.search(r"\b(INSERT INTO|SELECT .* FROM|CREATE .*VIEW|DROP TABLE)\b",
                                                    text):
                yield node


def test_no_f_string_splices_a_user_value_into_sql():
    offenders, scanned = [], 0
    for path in sorted((ROOT / "headdb").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in _fstring_sql(ast.parse(source)):
            scanned += 1
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    expr = ast.get_source_segment(source, value.value) or ""
                    if not _ALLOWED_SPLICES.match(expr.strip()):
                        offenders.append(f"{path.name}:{node.lineno}: {{{expr}}}")
    assert scanned >= 5  # the scan does see headdb's f-string SQL
    assert not offenders, "f-string SQL splices values that are not quoted identifiers:\n" + "\n".join(offenders)


def test_quote_ident_survives_hostile_names(db):
    from headdb.db import quote_ident

    con = duckdb.connect(str(db))
    try:
        con.execute(f"CREATE TEMP TABLE {quote_ident(HOSTILE)} (x INTEGER)")
        con.execute(f"INSERT INTO {quote_ident(HOSTILE)} VALUES (1)")
        assert con.execute(f"SELECT x FROM {quote_ident(HOSTILE)}").fetchall() == [(1,)]
        odd = 'a"b; DROP TABLE runs; --'
        con.execute(f"CREATE TEMP VIEW {quote_ident(odd)} AS SELECT 1 AS one")
        assert con.execute(f"SELECT one FROM {quote_ident(odd)}").fetchall() == [(1,)]
    finally:
        con.close()
    assert {"edges", "runs"} <= tables(db)


@pytest.mark.parametrize("command", [["summary", "--run"], ["classify", "--run"], ["compare"]])
def test_hostile_run_names_in_commands_are_values(db, monkeypatch, capsys, command):
    before = tables(db)
    args = [*command[:1], db, *command[1:], HOSTILE]
    if command == ["compare"]:
        args = ["compare", db, HOSTILE, "1"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "no run" in err or "no finished run" in err or "Usage" in err
    assert tables(db) == before


def test_sql_is_read_only_unless_asked(db, monkeypatch, capsys):
    for statement in ("DROP TABLE edges", "SELECT 1; DROP TABLE edges", "DELETE FROM runs",
                      "CREATE TABLE t AS SELECT 1", f"SELECT '{HOSTILE}'"[:-1]):
        code, _, err = run_cli(["sql", db, statement], monkeypatch, capsys)
        assert code == 1 and err.startswith("error: ") and err.count("\n") <= 2, (statement, err)
    assert "edges" in tables(db) and "t" not in tables(db)
    code, out, _ = run_cli(["sql", db, "SELECT ? AS v", "-f", "csv"], monkeypatch, capsys)
    assert code == 1  # a placeholder with no value is an error, not SQL text


@pytest.mark.slow
def test_hostile_values_in_an_ingest_are_stored_verbatim(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """Run name, corpus path and model path with quotes and semicolons: stored as given."""
    corpus = tmp_path / "it's; DROP TABLE runs; --.conllu"
    shutil.copy(SAMPLE, corpus)
    model = tmp_path / 'm"; DROP TABLE edges; --'
    shutil.copytree(tiny_bert_dir, model)
    db = tmp_path / "a'b.db"
    code, out, err = run_cli(["ingest", db, corpus, "--model", model, "--run-name", HOSTILE, "-q"],
                             monkeypatch, capsys)
    assert code == 0, err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT run_name, corpus_path, model FROM runs").fetchall() \
        == [(HOSTILE, str(corpus), str(model))]
    assert con.execute("SELECT count(*) > 0 FROM edges").fetchone()[0]
    con.close()
    code, out, err = run_cli(["summary", db, "--run", HOSTILE], monkeypatch, capsys)
    assert code == 0 and HOSTILE in out, err
    code, out, err = run_cli(["runs", db, "-f", "csv"], monkeypatch, capsys)
    assert code == 0 and "DROP TABLE edges" in out
    # the same hostile name again resumes/finds that run rather than breaking anything
    code, out, err = run_cli(["ingest", db, corpus, "--model", model, "--run-name", HOSTILE, "-q"],
                             monkeypatch, capsys)
    assert code == 0 and "already complete" in err
    assert {"edges", "runs", "tokens"} <= tables(db)


# --- concurrency --------------------------------------------------------------------------------

HOLD = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
        "con.execute('SELECT count(*) FROM runs').fetchall(); print('ready', flush=True); sys.stdin.read()")


class Holder:
    """Another process with the database open (writable unless ``read_only``) until closed."""

    def __init__(self, db: Path, read_only: bool = False):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "ro" if read_only else "rw"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def writer(db):
    h = Holder(db)
    yield h
    h.close()


LOCKED_COMMANDS = {
    "sql": ["sql", "{db}", "SELECT count(*) FROM runs"],
    "runs": ["runs", "{db}"],
    "summary": ["summary", "{db}"],
    "init": ["init", "{db}"],
    "classify": ["classify", "{db}"],
}


@pytest.mark.parametrize("name", list(LOCKED_COMMANDS))
def test_commands_on_a_database_another_process_writes_say_locked_by_pid(db, writer, monkeypatch, capsys, name):
    args = [a.format(db=db) for a in LOCKED_COMMANDS[name]]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 1 and out == ""
    assert err == (f"error: {db}: the database is locked by process {writer.pid}, which has it open for writing; "
                   "wait for it to finish (read-only commands work once no writer holds it)\n")


def test_read_only_commands_work_when_no_writer_holds_it(db, monkeypatch, capsys):
    code, out, _ = run_cli(["sql", db, "SELECT count(*) AS n FROM runs", "-f", "csv"], monkeypatch, capsys)
    assert code == 0 and out == "n\n0\n"
    reader = Holder(db, read_only=True)  # another reader does not stop readers
    try:
        code, out, _ = run_cli(["sql", db, "SELECT count(*) AS n FROM runs", "-f", "csv"], monkeypatch, capsys)
        assert code == 0 and out == "n\n0\n"
        code, out, _ = run_cli(["runs", db, "-f", "csv"], monkeypatch, capsys)
        assert code == 0 and out.startswith("run_id,")
        # ... but a writer must wait for it, and is told who holds it
        code, _, err = run_cli(["init", db], monkeypatch, capsys)
        assert code == 1
        assert err == (f"error: {db}: the database is locked by process {reader.pid}, which has it open for "
                       "reading; writing needs it alone: wait for that process to close it\n")
    finally:
        reader.close()
    assert run_cli(["init", db], monkeypatch, capsys)[0] == 0


def test_locked_error_type_and_nothing_changed(db):
    from headdb.db import connect
    from headdb.errors import DatabaseLockedError

    h = Holder(db)
    try:
        for read_only in (False, True):
            with pytest.raises(DatabaseLockedError, match=f"locked by process {h.pid}"):
                connect(db, read_only=read_only)
    finally:
        h.close()
    con = connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    con.close()


def test_a_store_another_process_holds_on_windows_is_locked(db, monkeypatch):
    """On Windows DuckDB's refusal names no lock: `IO Error: Cannot open file "...": The process
    cannot access the file because it is being used by another process.` (in the system's
    language), then `File is already open in ...python.exe (PID 8252)` (duckdb/duckdb#4037,
    suketa/ruby-duckdb#1285). It was "cannot open file" as if the store were unreadable, no
    DatabaseLockedError, and the holder's PID (on a later line) dropped."""
    from headdb.db import connect
    from headdb.errors import DatabaseLockedError

    def held(*args, **kwargs):
        raise duckdb.IOException(f'IO Error: Cannot open file "{db}": The process cannot access the file because '
                                 "it is being used by another process.\n\n\nFile is already open in \n"
                                 "C:\\Python312\\python.exe (PID 8252)")

    monkeypatch.setattr(duckdb, "connect", held)
    for read_only in (False, True):
        with pytest.raises(DatabaseLockedError) as caught:
            connect(db, read_only=read_only)
        assert str(caught.value) == (f"{db}: the database is locked by process 8252, which has it open; "
                                     "wait for that process to close it")


@pytest.mark.slow
def test_second_ingest_while_another_process_writes(db, tiny_bert_dir, monkeypatch, capsys):
    h = Holder(db)
    try:
        code, out, err = run_cli(["ingest", db, SAMPLE, "--model", tiny_bert_dir, "-q"], monkeypatch, capsys)
        assert code == 1 and out == ""
        assert err.startswith(f"error: {db}: the database is locked by process {h.pid}, which has it open for writing")
        assert err.count("\n") == 1
    finally:
        h.close()
    code, out, err = run_cli(["ingest", db, SAMPLE, "--model", tiny_bert_dir, "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == "1"  # the first run: the refused attempt left nothing behind


def test_locked_database_fails_an_ingest_before_its_slow_start(db, monkeypatch, capsys, tmp_path):
    # the lock is checked before the corpus is read and the model loaded: a model that does not
    # exist and a corpus that does not parse are not what the user is told about
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tx\n", encoding="utf-8")
    h = Holder(db)
    try:
        code, out, err = run_cli(["ingest", db, bad, "--model", str(tmp_path / "no-model"), "-q"],
                                 monkeypatch, capsys)
    finally:
        h.close()
    assert code == 1 and out == ""
    assert err.startswith(f"error: {db}: the database is locked by process {h.pid}")
