"""Ctrl-C and failed statements: the error a user sees is the one that happened.

- A statement that fails inside a transaction while a table is registered reports its own error,
  not DuckDB's refusal to unregister in the aborted transaction.
- Ctrl-C during a DuckDB statement (DuckDB's client raises RuntimeError("Query interrupted"))
  counts as an interrupt: the run is marked interrupted and resumes.
- The CLI exits 130 and says so on Ctrl-C (typer returns the code rather than raising it).
"""

from __future__ import annotations

import importlib
import os
import signal
import threading

import duckdb
import pyarrow as pa
import pytest

from headdb.db import interrupted
from headdb.errors import IngestInterrupted
from tests.cli_helpers import run_cli

ingest_module = importlib.import_module("headdb.ingest")
store = importlib.import_module("headdb.store")


def _edges(key_pos: list[int]) -> pa.Table:
    n = len(key_pos)
    return pa.table({"sentence_id": pa.array([0] * n, pa.int32()), "layer": pa.array([0] * n, pa.int16()),
                     "head": pa.array([0] * n, pa.int16()), "query_pos": pa.array([0] * n, pa.int16()),
                     "key_pos": pa.array(key_pos, pa.int32()), "weight": pa.array([0.5] * n, pa.float32())})


def test_a_failed_insert_in_a_transaction_reports_its_own_error(tmp_path):
    from headdb.db import connect, registered, transaction

    con = connect(tmp_path / "s.db")
    try:
        with pytest.raises(duckdb.ConversionException, match="out of range"):
            with transaction(con):
                store.insert_edges(con, 1, _edges([1, 70000]))  # key_pos beyond SMALLINT
        with pytest.raises(duckdb.ConversionException):
            with transaction(con):
                store._insert(con, "run_sentences", pa.table({"run_id": pa.array([1], pa.int64()),
                                                              "sentence_id": pa.array([2**40], pa.int64())}))
        # rolled back, and the connection goes on: the same names register again
        with transaction(con):
            con.execute("CREATE TEMP TABLE t (a SMALLINT)")
            with registered(con, "_headdb_edges", _edges([3])):
                con.execute("INSERT INTO t SELECT key_pos FROM _headdb_edges")
        assert con.execute("SELECT a FROM t").fetchall() == [(3,)]
    finally:
        con.close()


def test_a_failed_rollback_does_not_hide_the_blocks_error():
    from headdb.db import transaction

    con = duckdb.connect()
    with pytest.raises(ValueError, match="the block's own error"):
        with transaction(con):
            con.close()  # the ROLLBACK now fails as well
            raise ValueError("the block's own error")


def test_ctrl_c_during_a_duckdb_statement_counts_as_an_interrupt():
    con = duckdb.connect()
    caught: list[BaseException] = []
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        con.execute("SELECT sum(i * i) FROM range(100000000000) t(i)").fetchall()
    except BaseException as exc:  # noqa: BLE001 - whatever DuckDB makes of the signal
        caught.append(exc)
    finally:
        timer.cancel()
    assert caught and interrupted(caught[0]), caught
    assert interrupted(KeyboardInterrupt())
    assert interrupted(duckdb.InterruptException("INTERRUPT Error: Interrupted!"))
    assert not interrupted(RuntimeError("something else"))
    assert not interrupted(duckdb.IOException("No space left on device"))


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_cli_exits_130_on_ctrl_c(tmp_path, monkeypatch, capsys):
    from headdb.db import init

    db = tmp_path / "s.db"
    init(db)
    monkeypatch.setattr(store, "runs", _interrupt)
    code, out, err = run_cli(["runs", db], monkeypatch, capsys)
    assert code == 130 and err == "interrupted\n" and out == ""


def test_ctrl_c_outside_a_command_exits_130(monkeypatch, capsys):
    """Ctrl-C that typer does not see (while the last of stdout is flushed, after the command
    returned) exits 130 and says so, as one inside a command does."""
    cli = importlib.import_module("headdb.cli")

    def app(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", app)
    code, out, err = run_cli(["runs", "s.db"], monkeypatch, capsys)
    assert (code, out, err) == (130, "", "interrupted\n")


def _query_interrupted(*args, **kwargs):
    raise RuntimeError("Query interrupted")  # what DuckDB's client raises for Ctrl-C inside a statement


@pytest.mark.parametrize("command", ["classify", "sql", "sql --max-rows 0", "sql -f csv", "sql -f json",
                                     "sql --out x.csv"])
def test_ctrl_c_inside_a_duckdb_statement_exits_130_for_any_command(tmp_path, monkeypatch, capsys, command):
    """Not a traceback and exit 1: classify's scoring INSERT is where Ctrl-C lands most often;
    `headdb sql` reads its rows in several ways (the table's first rows, the whole result, a
    batch at a time to stdout or a file), each through query._fetching."""
    from headdb.db import init

    db = tmp_path / "s.db"
    init(db)
    if command == "classify":
        monkeypatch.setattr(importlib.import_module("headdb.classify"), "classify", _query_interrupted)
        args = ["classify", db]
    else:
        monkeypatch.setattr(importlib.import_module("headdb.query"), "_fetching", _query_interrupted)
        options = command.split()[1:]
        args = ["sql", db, "SELECT 1", *[str(tmp_path / o) if o.endswith(".csv") else o for o in options]]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert (code, err, out) == (130, "interrupted\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]


@pytest.mark.parametrize("raised, said", [
    (KeyboardInterrupt(), "interrupted before the ingest began: nothing was stored"),
    (IngestInterrupted(3, "ewt", 0), "interrupted: run 3 (ewt) has no sentence committed yet; run the same command "
     "again to resume it (or delete it: `headdb drop DB 3 --yes`)"),
    (IngestInterrupted(3, "ewt", None), "interrupted: run 3 (ewt) keeps the batches committed so far; run the same "
     "command again to resume it (or delete it: `headdb drop DB 3 --yes`)"),
    (IngestInterrupted(3, "ewt", 1), "interrupted: run 3 (ewt) keeps its 1 committed sentence; run the same command "
     "again to resume it (or delete it: `headdb drop DB 3 --yes`)"),
    (IngestInterrupted(3, "ewt", 1200), "interrupted: run 3 (ewt) keeps its 1,200 committed sentences; run the same "
     "command again to resume it (or delete it: `headdb drop DB 3 --yes`)"),
])
def test_an_interrupted_ingest_says_what_it_kept_and_how_to_resume(tmp_path, monkeypatch, capsys, raised, said):
    def interrupt(*args, **kwargs):
        raise raised

    monkeypatch.setattr(ingest_module, "ingest", interrupt)
    db = tmp_path / "s.db"
    code, _, err = run_cli(["ingest", db], monkeypatch, capsys)
    assert (code, err) == (130, said.replace("DB", str(db)) + "\n")


def test_commands_suggested_for_a_store_path_with_spaces_can_be_pasted(tmp_path, monkeypatch, capsys):
    """A store called `my store.db`: the commands headdb suggests quote it for the shell, as the
    report's accuracy command did (`headdb drop my store.db 3 --yes` was a usage error)."""
    def interrupt(*args, **kwargs):
        raise IngestInterrupted(3, "ewt", 0)

    db = tmp_path / "my store.db"
    quoted = f"'{db}'"
    code, _, err = run_cli(["runs", db], monkeypatch, capsys)
    assert code == 1 and err == f"error: {db}: no such database (create it with `headdb init {quoted}`)\n"
    assert run_cli(["init", db], monkeypatch, capsys)[0] == 0
    code, _, err = run_cli(["runs", db], monkeypatch, capsys)
    assert code == 0 and err == f"{db} has no runs yet: `headdb ingest {quoted} CORPUS` stores one\n"
    code, _, err = run_cli(["summary", db, "--run", "7"], monkeypatch, capsys)
    assert code == 1 and err.endswith(f"(see `headdb runs {quoted}`)\n"), err
    from headdb.errors import shell_word

    assert shell_word("-store.db") == "./-store.db"  # not read as an option
    monkeypatch.setattr(ingest_module, "ingest", interrupt)
    code, _, err = run_cli(["ingest", db], monkeypatch, capsys)
    assert code == 130 and err.endswith(f"(or delete it: `headdb drop {quoted} 3 --yes`)\n"), err


def test_an_interrupted_new_run_is_resumed_without_new_run(tmp_path, monkeypatch, capsys):
    """After an interrupted `ingest --new-run`, "run the same command again" started yet another
    run and left the interrupted one behind; without --new-run the same command resumes it."""
    def interrupt(*args, **kwargs):
        raise IngestInterrupted(2, "run-2", 0)

    monkeypatch.setattr(ingest_module, "ingest", interrupt)
    db = tmp_path / "s.db"
    code, _, err = run_cli(["ingest", db, "--new-run"], monkeypatch, capsys)
    assert code == 130 and "; run the same command again without --new-run to resume it (or delete it" in err, err


@pytest.mark.slow
def test_ctrl_c_inside_the_edge_insert_marks_the_run_interrupted_and_it_resumes(tmp_path, monkeypatch, tiny_bert_dir):
    from headdb.resources import sample_corpus

    db = tmp_path / "s.db"
    monkeypatch.setattr(ingest_module, "COMMIT_EDGES", 0)  # one commit per batch
    real = store.insert_edges
    calls = {"n": 0}

    def insert_edges(con, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # what DuckDB's client raises when Ctrl-C lands inside a statement
            raise RuntimeError("Query interrupted")
        return real(con, *args, **kwargs)

    monkeypatch.setattr(store, "insert_edges", insert_edges)
    with pytest.raises(IngestInterrupted) as caught:
        ingest_module.ingest(db, sample_corpus(), model=tiny_bert_dir, limit=40, batch_size=8)
    assert (caught.value.run_id, caught.value.kept) == (1, 16)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, error FROM runs").fetchall() == [("interrupted", "interrupted")]
    assert con.execute("SELECT count(*) FROM run_sentences").fetchone()[0] == 16  # two batches committed
    con.close()
    # `headdb runs` called it failed, the word it uses for errors
    assert store.runs(db)["status"].tolist() == ["interrupted"]
    monkeypatch.setattr(store, "insert_edges", real)
    result = ingest_module.ingest(db, sample_corpus(), model=tiny_bert_dir, limit=40, batch_size=8)
    assert result.resumed and result.sentences == 24 and result.kept_before == 16


def test_a_resume_says_how_many_inputs_it_found_kept(tmp_path, monkeypatch, capsys):
    """"resumed 2,995 sentences" of a 6,003-sentence run: the line gave what this call added, not
    what the run already held."""
    def resumed(*args, **kwargs):
        return ingest_module.IngestResult(3, "big", True, False, sentences=2995, kept_before=3008, edges=10)

    monkeypatch.setattr(ingest_module, "ingest", resumed)
    code, out, err = run_cli(["ingest", tmp_path / "s.db"], monkeypatch, capsys)
    assert (code, out) == (0, "3\n")
    assert err.startswith("run 3 (big): resumed with 3,008 sentences kept from before; stored 2,995 sentences, 10 edges"), err


@pytest.mark.parametrize("args", [["pairs.tsv"], ["corpus.conllu", "--pairs"], ["pairs.txt", "--format", "tsv"]])
def test_an_interrupted_or_resumed_run_of_pairs_counts_pairs(tmp_path, monkeypatch, capsys, args):
    """A run of pairs says "pairs" wherever an ingest counts its inputs (README, "Pairs"): Ctrl-C
    said "keeps its 256 committed sentences" of 256 pairs, and a resume "resumed with 256 inputs
    kept from before; stored 194 pairs"."""
    db = tmp_path / "s.db"

    def interrupt(*a, **kw):
        raise IngestInterrupted(1, "res", 256, pairs=True)  # as ingest() raises it for a run of pairs

    monkeypatch.setattr(ingest_module, "ingest", interrupt)
    code, _, err = run_cli(["ingest", db, *args], monkeypatch, capsys)
    assert code == 130 and err.startswith("interrupted: run 1 (res) keeps its 256 committed pairs; "), err

    def interrupt_early(*a, **kw):
        raise IngestInterrupted(1, "res", 0, pairs=True)

    monkeypatch.setattr(ingest_module, "ingest", interrupt_early)
    code, _, err = run_cli(["ingest", db, *args], monkeypatch, capsys)
    assert code == 130 and err.startswith("interrupted: run 1 (res) has no pair committed yet; "), err

    def resumed(*a, **kw):
        return ingest_module.IngestResult(1, "res", True, False, sentences=194, pairs=True, kept_before=256, edges=10)

    monkeypatch.setattr(ingest_module, "ingest", resumed)
    code, _, err = run_cli(["ingest", db, *args], monkeypatch, capsys)
    assert code == 0 and err.startswith("run 1 (res): resumed with 256 pairs kept from before; stored 194 pairs, "), err


def _ctrl_c_at_second_commit(monkeypatch) -> None:
    """Ctrl-C lands in the second batch's edges (each batch commits on its own): the first is kept."""
    real = store.insert_edges
    calls = {"n": 0}

    def insert_edges(con, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(con, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "COMMIT_EDGES", 0)
    monkeypatch.setattr(store, "insert_edges", insert_edges)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tsv", "conllu --pairs", "conllu"])
def test_an_ingests_interrupt_says_whether_its_inputs_are_pairs(tmp_path, monkeypatch, tiny_bert_dir, kind):
    """The CLI counts an interrupted run's inputs from the interrupt: pairs for a TSV corpus or
    --pairs, sentences otherwise."""
    from headdb.resources import sample_corpus

    corpus = sample_corpus()
    if kind == "tsv":
        corpus = tmp_path / "pairs.tsv"
        corpus.write_text("".join(f"The cat sat {i}.\tA dog barked {i}.\n" for i in range(24)), encoding="utf-8")
    _ctrl_c_at_second_commit(monkeypatch)
    with pytest.raises(IngestInterrupted) as caught:
        ingest_module.ingest(tmp_path / "s.db", corpus, model=tiny_bert_dir, pairs=kind == "conllu --pairs",
                             limit=24, batch_size=8)
    assert caught.value.kept == 8 and caught.value.pairs == (kind != "conllu")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["set-up", "clean-up"])
def test_ctrl_c_after_the_run_is_recorded_always_names_the_run(tmp_path, monkeypatch, tiny_bert_dir, where):
    """Ctrl-C in the set-up after the run was recorded, or a second Ctrl-C while the first one's
    clean-up ran, said "interrupted before the ingest began: nothing was stored" of a store that
    held the run (and 224 committed sentences)."""
    from headdb.resources import sample_corpus

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "set-up":
        monkeypatch.setattr(ingest_module, "_progress", interrupt)
    else:
        _ctrl_c_at_second_commit(monkeypatch)
        monkeypatch.setattr(ingest_module, "_kept", interrupt)  # the second Ctrl-C, during the clean-up
    db = tmp_path / "s.db"
    with pytest.raises(IngestInterrupted) as caught:
        ingest_module.ingest(db, sample_corpus(), model=tiny_bert_dir, limit=24, batch_size=8)
    assert (caught.value.run_id, caught.value.run_name, caught.value.kept) == (1, "run-1", None)
    monkeypatch.undo()
    assert ingest_module.ingest(db, sample_corpus(), model=tiny_bert_dir, limit=24, batch_size=8).resumed


def test_ctrl_c_stops_a_duckdb_statement_that_does_not_look_for_the_signal():
    """DuckDB 2.0.1's client looks for Ctrl-C between the tasks of a statement, and a cross join
    in a scalar subquery runs one task for minutes: the signal never stopped it. Run on a worker
    thread (headdb.db.interruptible), the statement is interrupted at once."""
    import time

    from headdb.db import interruptible

    con = duckdb.connect()
    endless = "SELECT (SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c)"
    ctrl_c = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    rescue = threading.Timer(30, con.interrupt)  # never a hung suite, should it not stop
    ctrl_c.start()
    rescue.start()
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            interruptible(con, lambda: con.execute(endless).fetchall())
    finally:
        ctrl_c.cancel()
        rescue.cancel()
    assert time.monotonic() - began < 10
    while any(t.name == "headdb-role-sql" for t in threading.enumerate()):  # the worker ends too
        assert time.monotonic() - began < 10
        time.sleep(0.01)
    # the connection goes on; the worker's result and errors come back as they are
    assert interruptible(con, lambda: con.execute("SELECT 42").fetchall()) == [(42,)]
    with pytest.raises(duckdb.CatalogException, match="nowhere"):
        interruptible(con, lambda: con.execute("SELECT * FROM nowhere"))
    con.close()


ENDLESS_ROLES = {
    # the recursive CTE never ends: DuckDB never stopped it for Ctrl-C
    "endless": "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r)\n"
               "SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\n"
               "FROM tokens t JOIN r ON r.i = t.token_pos\n",
    # 10^15 rows, counted in one task
    "crossed": "SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos FROM tokens t\n"
               "WHERE t.token_pos < (SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c)\n",
}


def _stored(db) -> tuple:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return tuple(con.execute(sql).fetchall() for sql in (
            "SELECT * FROM classifications ORDER BY ALL",
            "SELECT role, count(*), sum(mean), sum(p) FROM head_tests GROUP BY ALL ORDER BY ALL",
            "SELECT role, count(*), sum(score) FROM sentence_scores GROUP BY ALL ORDER BY ALL",
            "SELECT role, sha256 FROM roles ORDER BY ALL"))
    finally:
        con.close()


@pytest.mark.parametrize("how", ["cli", "api"])
def test_ctrl_c_stops_classify_in_a_role_that_never_ends_and_the_store_is_unchanged(tmp_path, how):
    """Ctrl-C (SIGINT) in `headdb classify`, or in headdb.classify(), while a role's SQL runs that
    DuckDB does not stop for the signal: it ends at once with `interrupted` (a KeyboardInterrupt
    from Python), and the store keeps its previous classification as it was."""
    import subprocess
    import sys
    import time

    import numpy as np
    from role_reference import build_store, simple_seq

    import headdb

    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"])] * 3
    rng = np.random.default_rng(0)
    build_store(tmp_path / "s.db", seqs, [rng.dirichlet(np.ones(q.length), size=(1, 2, q.length)) for q in seqs])
    db = tmp_path / "s.db"
    headdb.classify(db, roles="local,delimiter", progress=False)
    name = "endless" if how == "cli" else "crossed"
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / f"{name}.sql").write_text(f"-- name: {name}\n-- description: never ends\n-- level: token\n"
                                       + ENDLESS_ROLES[name])
    command = ([sys.executable, "-m", "headdb", "classify", str(db), "--roles-dir", str(roles), "--roles",
                f"local,{name}", "-q"] if how == "cli" else
               [sys.executable, "-c", "import sys, headdb\ntry:\n    headdb.classify(sys.argv[1], roles=['local', "
                f"'{name}'], roles_dir=sys.argv[2])\nexcept KeyboardInterrupt:\n    sys.exit('KeyboardInterrupt')",
                str(db), str(roles)])
    # as long as a whole classification of the store takes, twice over: the role's SQL runs by then
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headdb", "classify", str(db), "--roles", "local", "--quiet",
                           "--out", str(tmp_path / "t.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = _stored(db)
    wait = max(2.0, 2 * (time.monotonic() - began))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(wait)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - sent < 10
    if how == "cli":
        assert (proc.returncode, err, out) == (130, "interrupted\n", "")
    else:
        assert (proc.returncode, err.splitlines()[-1:], out) == (1, ["KeyboardInterrupt"], "")
    assert _stored(db) == before
