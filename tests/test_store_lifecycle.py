"""The store over its life, under failures a QA pass reproduced: compact keeps what the file was
(its permissions, owner, the link to it) and never breaks a compact already running; files that
are not headdb's (another tool's migrations table, SQLite, a failed init) are named and left as
they were; a run dropped while classify ran gets no results; re-classifying leaves no empty
classification; errors nobody foresaw (a full disk) are one line; SIGTERM is Ctrl-C."""

from __future__ import annotations

import importlib
import os
import signal
import sqlite3
import stat
from pathlib import Path

import duckdb
import numpy as np
import pytest

import headdb
from cli_helpers import run_main
from headdb.db import check_writable, init
from headdb.errors import DatabaseError
from role_reference import build_store, dirichlet_attention, simple_seq


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(2)
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(4)]
    db = tmp_path / "s.db"
    build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs], top_k=3)
    return db


def test_compact_keeps_the_stores_permissions_owner_and_the_link_to_it(store, tmp_path):
    os.chmod(store, 0o640)
    root = os.geteuid() == 0
    if root:
        os.chown(store, 65534, 65534)
    link = tmp_path / "alias.db"
    link.symlink_to(store)
    headdb.sql(link, "DELETE FROM edge_store WHERE sentence_id = 0", write=True)
    before, after = headdb.compact(link)
    assert link.is_symlink() and link.resolve() == store.resolve()  # the link is a link still
    st = store.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640  # a private store stays private
    if root:
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert not list(tmp_path.glob("*compact-tmp*"))


def test_compact_works_where_the_system_has_no_owners_to_set(store, monkeypatch):
    """Windows' os has no chown: compact failed there with "module 'os' has no attribute
    'chown'" (a traceback), after the whole copy was made."""
    monkeypatch.delattr(os, "chown")
    headdb.sql(store, "DELETE FROM edge_store WHERE sentence_id = 0", write=True)
    before, after = headdb.compact(store)
    assert after <= before and len(headdb.runs(store)) == 1
    assert not list(store.parent.glob("*compact-tmp*"))
    assert headdb.sql(store, "SELECT count(*) AS n FROM edges WHERE sentence_id = 0")["n"][0] == 0


def test_a_compact_that_cannot_take_the_store_leaves_the_running_ones_copy(store):
    """The second compact removed the first one's copy before finding the store locked; the first
    then died replacing the store with a file that was gone."""
    copy = store.with_name(store.name + ".compact-tmp")
    copy.write_bytes(b"the copy a running compact is writing")
    reader = duckdb.connect(str(store), read_only=True)  # the store busy, as during the first compact
    try:
        with pytest.raises(DatabaseError):
            headdb.compact(store)
    finally:
        reader.close()
    assert copy.read_bytes() == b"the copy a running compact is writing"
    headdb.compact(store)  # with the store free, a leftover copy (a killed compact's) goes
    assert not copy.exists()


def test_another_tools_migrations_table_is_not_headdbs(tmp_path, capsys, monkeypatch):
    """golang-migrate / dbmate keep schema_migrations(version, dirty): read as headdb's version 3
    ("older than 8; run headdb init"), after which init failed with a Binder Error traceback."""
    db = tmp_path / "app.db"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version BIGINT, dirty BOOLEAN)")
    con.execute("INSERT INTO schema_migrations VALUES (3, false)")
    con.close()
    data = db.read_bytes()
    for args in (("runs", db), ("init", db), ("ingest", db), ("sql", db, "SELECT 1")):
        code, _, err = run_main(capsys, monkeypatch, *args)
        assert code == 1 and err == (f"error: {db}: not a headdb database (its table schema_migrations is another "
                                     "tool's); keep the headdb store in a file of its own\n"), (args, err)
    assert db.read_bytes() == data


def test_a_failed_init_leaves_a_foreign_file_as_it_was(tmp_path):
    """A file with its own `runs` table: init fails, and left an empty schema_migrations behind,
    after which every command said "not a headdb database (run headdb init)", which failed again."""
    db = tmp_path / "mine.db"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE runs (x INTEGER)")
    con.close()
    with pytest.raises(DatabaseError, match=f"^{db}: .*migration failed"):
        init(db)
    con = duckdb.connect(str(db), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["runs"]
    con.close()


def test_files_that_are_not_duckdb_are_named(tmp_path, capsys, monkeypatch):
    """A SQLite file made DuckDB try to download its sqlite extension (nothing may be downloaded)."""
    lite = tmp_path / "x.sqlite"
    c = sqlite3.connect(lite)
    c.execute("CREATE TABLE t (a)")
    c.commit()
    c.close()
    text = tmp_path / "notes.db"
    text.write_text("these are my notes, not a database\n")
    for path, words in ((lite, "a SQLite database, not a DuckDB one"), (text, "not a DuckDB database file")):
        data = path.read_bytes()
        for args in (("runs", path), ("init", path), ("classify", path)):
            code, _, err = run_main(capsys, monkeypatch, *args)
            assert code == 1 and err == f"error: {path}: {words}" + ("; headdb stores are DuckDB files\n"
                                                                    if "SQLite" in words else "\n"), (args, err)
        assert path.read_bytes() == data
    # a corpus where the store goes (`headdb classify corpus.conllu`) says what the store is
    corpus = tmp_path / "corpus.conllu"
    corpus.write_text("# text = Hi .\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n")
    for args in (("classify", corpus), ("runs", corpus), ("report", corpus, "--out", tmp_path / "r")):
        code, _, err = run_main(capsys, monkeypatch, *args)
        assert code == 1 and err == (f"error: {corpus}: not a DuckDB database file; it is named like a corpus: the "
                                     "store is the DuckDB file that `headdb ingest DB CORPUS` made\n"), (args, err)


def test_a_folder_as_the_store_is_named_as_one(tmp_path, capsys, monkeypatch):
    """A folder (or an empty path, read as ".") as the store read as DuckDB's "IO Error: Could not
    read from file ...: Is a directory"."""
    folder = tmp_path / "results"
    folder.mkdir()
    for args in (("ingest", folder), ("init", folder), ("runs", folder), ("sql", folder, "SELECT 1"),
                 ("sql", folder, "SELECT 1", "--write"), ("classify", folder), ("drop", folder, "1"),
                 ("compact", folder), ("accuracy", folder), ("report", folder, "--out", tmp_path / "r")):
        code, out, err = run_main(capsys, monkeypatch, *args)
        assert (code, out) == (1, ""), (args, err)
        assert err == (f"error: {folder}: is a folder; a headdb store is a DuckDB file (name one in the folder, such "
                       f"as {folder / 'store.db'})\n"), (args, err)
    assert list(folder.iterdir()) == [] and not (tmp_path / "r").exists()


def test_headdb_works_beside_a_users_own_connection_to_the_store(store, tmp_path):
    """A connection the user holds in the same process (a notebook's duckdb.connect) must not
    stop headdb's reads: DuckDB refuses a second connection to a file with other settings, so
    headdb opens stores with DuckDB's defaults. Role SQL runs with settings of its own (external
    access off, configuration locked): beside the user's connection it is refused with a clear
    message, and the user's connection keeps its settings (they were locked with it before)."""
    mine = duckdb.connect(str(store), read_only=True)
    try:
        assert headdb.sql(store, "SELECT count(*) AS n FROM runs")["n"][0] == 1
        assert len(headdb.runs(store)) == 1 and headdb.summary(store)["run_id"] == 1
        with pytest.raises(DatabaseError, match="already has the database open with other settings.*close it first"):
            headdb.classify(store, store=False, roles="local")
        assert mine.execute("SELECT current_setting('enable_external_access'), "
                            "current_setting('lock_configuration')").fetchone() == (True, False)
        mine.execute(f"COPY (SELECT 1 AS x) TO '{tmp_path / 'mine.csv'}'")  # the user's own work goes on
        assert headdb.sql(store, "SELECT count(*) AS n FROM runs")["n"][0] == 1  # and so does headdb's
    finally:
        mine.close()
    assert len(headdb.classify(store, store=False, roles="local")) == 2
    mine = duckdb.connect(str(store))
    try:
        headdb.sql(store, "UPDATE runs SET run_name = 'mine'", write=True)
        assert mine.execute("SELECT run_name FROM runs").fetchone()[0] == "mine"
    finally:
        mine.close()


def _locked_for_another_process(db: Path) -> bool:
    """Whether another process is refused the store for writing (DuckDB's lock on it)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(db)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode != 0 and "lock" in proc.stderr.lower()


def test_compact_swaps_the_copy_in_under_a_lock(store, monkeypatch):
    """compact closed the store, then put the copy in its place: a process that opened the store
    between the two committed into the file that was then replaced, and its rows were gone
    without an error. Both files are now locked across the swap."""
    db = importlib.import_module("headdb.db")
    real = db._same_owner_and_mode
    seen = []

    def between(target, copy):  # right before the swap
        seen.append(_locked_for_another_process(target))
        real(target, copy)

    monkeypatch.setattr(db, "_same_owner_and_mode", between)
    real_replace = os.replace

    def replace(a, b):
        real_replace(a, b)
        seen.append(_locked_for_another_process(Path(b)))  # the copy, in the store's place

    monkeypatch.setattr(os, "replace", replace)
    headdb.compact(store)
    assert seen == [True, True]
    monkeypatch.undo()
    assert not _locked_for_another_process(store) and len(headdb.runs(store)) == 1
    assert not list(store.parent.glob("*.compact-tmp*"))


@pytest.mark.parametrize("read_only", [False, True])
def test_headdb_calls_keep_the_lock_of_a_users_connection(store, read_only):
    """Reading the store's header (is it DuckDB's?) closed a descriptor of the file, and closing
    any descriptor drops every POSIX lock the process holds on it: DuckDB's lock for the user's
    connection was gone after any headdb call, a refused one too, and another process wrote the
    store under it (the user's connection later overwrote those rows)."""
    mine = duckdb.connect(str(store), read_only=read_only)
    try:
        assert _locked_for_another_process(store)
        if read_only:
            assert len(headdb.runs(store)) == 1
        else:
            headdb.sql(store, "UPDATE runs SET run_name = 'mine'", write=True)
        with pytest.raises(DatabaseError, match="other settings"):  # refused, and still no harm done
            headdb.sql(store, "SELECT 1", write=read_only)
        assert _locked_for_another_process(store)
    finally:
        mine.close()
    assert not _locked_for_another_process(store)


def test_a_store_path_that_names_a_service_is_refused(tmp_path, capsys, monkeypatch):
    """`md:x` or `sqlite:x.db` made DuckDB install and load an extension from the network."""
    monkeypatch.chdir(tmp_path)
    for path in ("md:x", "sqlite:x.db", "s3://bucket/x.db"):
        for args in (("runs", path), ("init", path)):
            code, _, err = run_main(capsys, monkeypatch, *args)
            assert code == 1 and err == (f"error: {Path(path)}: not a file path; a headdb store is a DuckDB file (DuckDB "
                                         "would fetch an extension for this name)\n"), err
        with pytest.raises(DatabaseError, match="not a file path"):
            check_writable(path)  # an ingest: before the model loads
    assert list(tmp_path.iterdir()) == []


def test_a_store_in_a_missing_folder_is_named_as_such_by_every_command(tmp_path, capsys, monkeypatch):
    """`headdb sql` and `drop` in a missing folder said `no such database (create it with
    headdb init ...)`, and that init then failed with `no such folder`."""
    monkeypatch.chdir(tmp_path)
    db = Path("missing") / "s.db"
    for args in (("sql", db, "SELECT 1"), ("sql", db, "SELECT 1", "--write"), ("drop", db, "1"), ("runs", db),
                 ("init", db)):
        code, _, err = run_main(capsys, monkeypatch, *args)
        assert code == 1 and err == f"error: {db}: no such folder {tmp_path / 'missing'}\n", (args, err)
    assert list(tmp_path.iterdir()) == []


def test_an_ingest_checks_the_store_before_its_slow_start(tmp_path):
    """A store of a newer schema, or a path in a missing folder, failed only after the model loaded."""
    with pytest.raises(DatabaseError, match="no such folder"):
        check_writable(tmp_path / "missing" / "s.db")
    db = tmp_path / "new.db"
    init(db)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')")
    con.close()
    with pytest.raises(DatabaseError, match=f"^{db}: the database has schema version 99, newer"):
        check_writable(db)
    with pytest.raises(DatabaseError, match=f"^{db}: the database has schema version 99, newer"):
        init(db)  # init says which database, as every other command does
    check_writable(tmp_path / "not-yet.db")  # a missing file in an existing folder is fine, and not created
    assert not (tmp_path / "not-yet.db").exists()


def test_a_run_dropped_while_classify_scores_gets_no_results(store, monkeypatch):
    """classify read the run on one connection and stored on another without looking again: a
    `headdb drop` in between left a classification and head tests of a run that was gone."""
    scores = importlib.import_module("headdb.scores")
    real = scores.sieve_passes

    def drop_meanwhile(*args, **kwargs):
        got = real(*args, **kwargs)
        args[0].close()  # the read-only connection classify holds; then another process's drop
        headdb.drop_run(store, 1)
        return got

    monkeypatch.setattr(scores, "sieve_passes", drop_meanwhile)
    with pytest.raises(DatabaseError, match="no run 1 in"):
        headdb.classify(store, run=1)
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT (SELECT count(*) FROM classifications) + (SELECT count(*) FROM head_tests) "
                       "+ (SELECT count(*) FROM sentence_scores)").fetchone()[0] == 0
    con.close()


def test_reclassifying_leaves_no_classification_without_tests(store):
    headdb.classify(store, roles="local")
    headdb.classify(store, roles="local,nsubj")  # replaces every test of the first
    headdb.classify(store, roles="nsubj")  # replaces some of the second's
    rows = headdb.sql(store, "SELECT c.classification_id, c.roles, count(t.role) AS tests FROM classifications c "
                             "LEFT JOIN head_tests t USING (classification_id) GROUP BY ALL ORDER BY 1")
    assert rows[["roles", "tests"]].values.tolist() == [["local,nsubj", 2], ["nsubj", 2]]


def test_unforeseen_storage_errors_are_one_line(store, capsys, monkeypatch):
    """A disk that fills while classify commits gave a DuckDB traceback."""
    def full_disk(*args, **kwargs):
        raise duckdb.IOException('IO Error: Could not write file "s.db.wal": No space left on device')

    def read_only_folder(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(store.parent / "x.tmp"))

    def out_of_memory(*args, **kwargs):  # roles whose sieves grow with length^2, many in one pass
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block of size 256.0 KiB")

    for fake, said in ((full_disk, 'error: DuckDB: IO Error: Could not write file "s.db.wal": No space left on '
                                   "device\n"),
                       (out_of_memory, "error: DuckDB: Out of Memory Error: failed to pin block of size 256.0 KiB; "
                                       "classify fewer roles at a time (--roles), or those whose sieves hold fewer "
                                       "pairs\n"),
                       (read_only_folder, f"error: {store.parent / 'x.tmp'}: Permission denied\n")):
        monkeypatch.setattr(importlib.import_module("headdb.classify"), "classify", fake)
        code, out, err = run_main(capsys, monkeypatch, "classify", store)
        assert (code, err) == (1, said)


def test_sigterm_ends_a_command_like_ctrl_c(store, capsys, monkeypatch):
    """`timeout` or `docker stop` ended an ingest without a word (exit 143)."""
    before = signal.getsignal(signal.SIGTERM)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setattr(importlib.import_module("headdb.store"), "runs", terminated)
    code, _, err = run_main(capsys, monkeypatch, "runs", store)
    assert (code, err) == (130, "interrupted\n")
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler again


@pytest.mark.slow
def test_sigterm_during_an_ingest_says_what_it_kept_and_the_run_resumes(tmp_path, capsys, monkeypatch, tiny_bert_dir):
    """The README's SIGTERM row: an ingest ended by SIGTERM says what it kept, exit code 130, and
    the same command resumes it to the rows of an uninterrupted run."""
    from headdb import store as store_module
    from headdb.resources import sample_corpus

    db = tmp_path / "s.db"
    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "COMMIT_EDGES", 0)  # a commit per batch
    real = store_module.insert_edges
    calls = {"n": 0}

    def insert_edges(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after two committed batches
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "insert_edges", insert_edges)
    args = ("ingest", db, sample_corpus(), "--model", tiny_bert_dir, "--limit", "40", "--batch-size", "8", "-q")
    code, out, err = run_main(capsys, monkeypatch, *args)
    assert code == 130, err
    assert err.startswith("interrupted: run 1 (run-1) keeps its 16 committed sentences; run the same command "
                          "again to resume it"), err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, error FROM runs").fetchall() == [("interrupted", "interrupted")]
    con.close()
    monkeypatch.setattr(store_module, "insert_edges", real)
    code, out, err = run_main(capsys, monkeypatch, *args)
    assert (code, out.strip()) == (0, "1"), err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("done",)]
    assert con.execute("SELECT count(*) FROM run_sentences").fetchone()[0] == 40
    con.close()


def test_no_finished_run_says_which_run_to_resume(store):
    con = duckdb.connect(str(store))
    con.execute("UPDATE runs SET status = 'running'")
    con.close()
    with pytest.raises(DatabaseError, match="has no finished run: run 1 is interrupted; run its `headdb ingest` "
                                            "command again to resume it"):
        headdb.summary(store)


def test_compact_reports_its_progress_in_bytes(store, monkeypatch, capsys):
    """A compact of a large store ran for minutes with no sign of life: DuckDB reports no progress
    for COPY FROM DATABASE. The copy's size against the store's used blocks stands in for it."""
    import sys
    import time

    db = importlib.import_module("headdb.db")
    cli = importlib.import_module("headdb.cli")
    used = duckdb.connect(str(store), read_only=True).execute(
        "SELECT used_blocks * block_size FROM pragma_database_size()").fetchone()[0]
    calls = []

    class Slow:  # the copy's statement takes a while, as a large store's does: the watcher looks meanwhile
        def __init__(self, con):
            self._con = con

        def execute(self, sql, *args):
            out = self._con.execute(sql, *args)
            if sql.startswith("COPY FROM DATABASE"):
                time.sleep(0.3)
            return out

        def __getattr__(self, name):
            return getattr(self._con, name)

    real_connect = db.connect
    monkeypatch.setattr(db, "connect", lambda *a, **k: Slow(real_connect(*a, **k)))
    monkeypatch.setattr(db, "COMPACT_POLL_S", 0.02)
    headdb.compact(store, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 3 and all(total == used for _, total in calls), calls
    assert calls[-1] == (used, used)  # the end, once
    assert 0 < calls[-2][0] <= used  # the copy's bytes as it was written
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # the CLI shows it as a bar of bytes in a terminal, not when piped, not with --quiet
    seen = []
    real_bar = cli._steps_bar
    monkeypatch.setattr(cli, "_steps_bar", lambda *a, **k: seen.append((a, k)) or real_bar(*a, **k))
    code, out, _ = run_main(capsys, monkeypatch, "compact", store, "-q")
    assert code == 0 and out.startswith(f"compacted {store}: ") and seen == [(("compacting", True), {"in_bytes": True})]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with real_bar("compacting", False, in_bytes=True) as progress:
        progress(10, 100)
        progress(100, 100)


def test_no_run_in_an_in_memory_store_suggests_no_command():
    """An in-memory store has no path: its 'no run' error suggested `headdb runs 'the database'`."""
    from headdb.db import connect
    from headdb.store import resolve_run

    con = connect(":memory:")
    with pytest.raises(DatabaseError, match=r"^no run 'nope' in the database$"):
        resolve_run(con, "nope")
    con.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_compact_refuses_a_store_this_process_has_open(store, read_only):
    """A notebook's own writable duckdb.connect() shares DuckDB's instance with compact's (same
    settings), so compact went ahead and put its copy in the store's place: the user's
    connection went on with the old, unlinked file, and the rows it wrote afterwards were lost
    without an error. Now compact refuses, and the store stays as it was."""
    mine = duckdb.connect(str(store), read_only=read_only)
    try:
        inode = store.stat().st_ino
        with pytest.raises(DatabaseError, match="this process has the store open .*close it first"):
            headdb.compact(store)
        assert store.stat().st_ino == inode
        if not read_only:
            mine.execute("CREATE TABLE mine AS SELECT 1 AS x")
    finally:
        mine.close()
    headdb.compact(store)  # once it is closed
    assert len(headdb.runs(store)) == 1
    if not read_only:  # what the user wrote is in the store
        assert headdb.sql(store, "SELECT count(*) AS n FROM mine")["n"].tolist() == [1]


def test_a_path_that_starts_with_a_tilde_is_in_the_home_folder(store, tmp_path, capsys, monkeypatch):
    """Bash leaves the ~ of `--out=~/x.csv` (and a quoted '~/s.db') as it is: `sql --out=~/o.csv`
    made a folder named ~ in the working directory and said `wrote 1 row to ~/o.csv`, and a store
    '~/s.db' was `no such folder ./~`."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    store.rename(home / "s.db")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    code, out, err = run_main(capsys, monkeypatch, "sql", "~/s.db", "SELECT count(*) AS n FROM runs", "--out=~/o.csv")
    assert (code, err) == (0, f"wrote 1 row to {home / 'o.csv'}\n")
    assert (home / "o.csv").read_text() == "n\n1\n"
    code, out, err = run_main(capsys, monkeypatch, "classify", "~/s.db", "--roles", "local", "--quiet",
                              "--out=~/t.json")
    assert code == 0 and (home / "t.json").exists(), err
    assert list(cwd.iterdir()) == []
