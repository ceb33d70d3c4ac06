"""`headdb classify` and `headdb roles`: exit codes, the terminal table, stored results, exports."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import headdb
from role_reference import build_store, dirichlet_attention, simple_seq
from cli_helpers import read_export, run_main

EXPORT_COLUMNS = ["run", "layer", "head", "role", "n", "mean", "std", "tau", "t", "p", "p_adj", "significant",
                  "ci_low", "ci_high", "flip_possible"]
HEADDB = Path(sys.executable).parent / "headdb"




@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Sparse (top-3) random attention, 2 layers x 3 heads, where head (1, 2) looks at [CLS]."""
    rng = np.random.default_rng(3)
    seqs = [simple_seq([1, 2, 1, 1], [1, None, 1, 1], ["nsubj", "root", "obj", "advmod"]) for _ in range(6)]
    att = []
    for q in seqs:
        a = dirichlet_attention(rng, 2, 3, q.length)
        a[1, 2] = 0.02 / (q.length - 1)
        a[1, 2, :, 0] = 0.98
        att.append(a)
    db = tmp_path_factory.mktemp("cli") / "s.db"
    build_store(db, seqs, att, top_k=3)
    return db


def test_classify_prints_tables_stores_and_replaces(store, capsys, monkeypatch):
    code, out, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "delimiter_cls,local")
    assert code == 0, err
    assert "0-based" in out and "delimiter_cls: 1/6 heads" in out
    assert "5.88*" in out or "*" in out.split("delimiter_cls")[1].split("local")[0]
    tests = headdb.sql(store, "SELECT role, count(*) AS n FROM head_tests GROUP BY role ORDER BY role")
    assert tests.to_dict("records") == [{"role": "delimiter_cls", "n": 6}, {"role": "local", "n": 6}]
    n_scores = headdb.sql(store, "SELECT count(*) AS n FROM sentence_scores")["n"][0]
    # re-running replaces this run's results for those roles, and keeps the others
    code, out, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "--tau", "1",
                              "--correction", "holm")
    assert code == 0, err
    assert "(holm correction, alpha 0.05;" in out and "local: " in out and "delimiter_cls: " not in out
    again = headdb.sql(store, "SELECT role, min(tau) AS tau, count(*) AS n FROM head_tests GROUP BY role ORDER BY role")
    assert again.to_dict("records") == [{"role": "delimiter_cls", "tau": 3.0, "n": 6}, {"role": "local", "tau": 1.0, "n": 6}]
    assert headdb.sql(store, "SELECT count(*) AS n FROM sentence_scores")["n"][0] == n_scores
    runs = headdb.sql(store, "SELECT roles, alpha, correction, tau_override FROM classifications "
                             "ORDER BY classification_id")
    assert list(runs["correction"]) == ["bh", "holm"]
    # each classification names its roles in test order, and its options
    assert list(runs["roles"]) == ["delimiter_cls,local", "local"]
    assert list(runs["alpha"]) == [0.05, 0.05] and runs["tau_override"].isna().tolist() == [True, False]
    assert runs["tau_override"].iloc[1] == 1.0


@pytest.mark.parametrize("ext", ["csv", "json", "parquet"])
def test_export_columns_exactly(store, tmp_path, capsys, monkeypatch, ext):
    out_file = tmp_path / f"tests.{ext}"
    code, _, err = run_main(capsys, monkeypatch, "classify", store, "--out", out_file, "--correction", "none")
    assert code == 0, err
    df = read_export(out_file)
    assert list(df.columns) == EXPORT_COLUMNS
    assert len(df) == 6 * 10  # 2 x 3 heads, every built-in (block: single inputs, n = 0)
    assert (df.loc[df["role"] == "block", "n"] == 0).all()
    assert set(df["layer"]) == {0, 1} and set(df["head"]) == {0, 1, 2}
    assert df["significant"].dtype == bool


def test_classify_errors_exit_1_with_one_line(store, tmp_path, capsys, monkeypatch):
    for args, words in [
        (["--roles", "nope"], "unknown role"),
        (["--correction", "fdr"], "--correction must be one of"),
        (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
        (["--run", "99"], "no run"),
        (["--out", tmp_path / "x.xlsx"], "cannot export"),
    ]:
        code, _, err = run_main(capsys, monkeypatch, "classify", store, *args)
        assert code == 1 and words in err and err.count("\n") == 1, (args, err)
    bad = tmp_path / "roles"
    bad.mkdir()
    (bad / "bad.sql").write_text("-- name: bad\n-- description: d\n-- level: token\nUPDATE tokens SET piece = 'x'\n")
    code, _, err = run_main(capsys, monkeypatch, "classify", store, "--roles-dir", bad)
    assert code == 1 and f"{bad / 'bad.sql'}:4:" in err


def test_an_export_that_fails_after_storing_says_the_classification_is_stored(store, tmp_path, monkeypatch):
    """--out is checked before anything is stored, but the disk can still fill up while the
    file is written: the error then said only that the export failed, not that the results
    were stored all the same."""
    from headdb.errors import InputError

    def full_disk(df, out):
        raise InputError("cannot write the export: No space left on device", out)

    monkeypatch.setattr(importlib.import_module("headdb.query"), "export", full_disk)
    with pytest.raises(InputError) as caught:
        headdb.classify(store, out=tmp_path / "r.csv")
    newest = headdb.sql(store, "SELECT max(classification_id) AS c FROM classifications")["c"][0]
    assert str(caught.value) == (f"{tmp_path / 'r.csv'}: cannot write the export: No space left on device; the "
                                 f"classification itself is stored (classification {newest}: its tests are the rows "
                                 "of head_tests with that classification_id)")
    assert headdb.sql(store, "SELECT count(*) AS n FROM head_tests WHERE classification_id = ?", [int(newest)])["n"][0] > 0
    # without storing, nothing is stored to speak of: the export's own error
    with pytest.raises(InputError) as caught:
        headdb.classify(store, roles="local", store=False, out=tmp_path / "r.csv")
    assert str(caught.value) == f"{tmp_path / 'r.csv'}: cannot write the export: No space left on device"


def test_the_cli_says_the_classification_is_stored_when_its_export_fails(store, tmp_path, capsys, monkeypatch):
    """`headdb classify --out` wrote the file itself, after the API had stored the results: a
    full disk then said only that the export failed, where headdb.classify(out=) says that the
    classification is stored."""
    from headdb.errors import InputError

    def full_disk(df, out):
        raise InputError("cannot write the export: No space left on device", out)

    monkeypatch.setattr(importlib.import_module("headdb.query"), "export", full_disk)
    code, _, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "--out", tmp_path / "r.csv")
    newest = headdb.sql(store, "SELECT max(classification_id) AS c FROM classifications")["c"][0]
    assert code == 1 and err == (f"error: {tmp_path / 'r.csv'}: cannot write the export: No space left on device; "
                                 f"the classification itself is stored (classification {newest}: its tests are the "
                                 "rows of head_tests with that classification_id)\n")


def test_ctrl_c_while_out_is_written_says_the_classification_is_stored(store, tmp_path, capsys, monkeypatch):
    """Ctrl-C once the results were committed, while --out was written, read "interrupted", as
    if the store had been left as it was; a Ctrl-C before the commit still stores nothing."""
    def ctrl_c(df, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("headdb.query"), "export", ctrl_c)
    out = tmp_path / "r.csv"
    code, stdout, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "--out", out)
    newest = int(headdb.sql(store, "SELECT max(classification_id) AS c FROM classifications")["c"][0])
    run = int(headdb.sql(store, "SELECT run_id FROM classifications WHERE classification_id = ?", [newest])["run_id"][0])
    assert (code, stdout) == (130, "")
    assert err == (f"interrupted: the classification is stored (classification {newest} of run {run}), but {out} was "
                   "not written: run the same command again to write it\n")
    assert not out.exists()
    with pytest.raises(headdb.errors.ClassifyInterrupted) as caught:  # a KeyboardInterrupt, from Python too
        headdb.classify(store, roles="local", out=out)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.classification_id == newest + 1
    assert str(caught.value) == f"classification {newest + 1} of run {run} stored; {out} not written"
    # without out (a Ctrl-C just after the commit): no file named 'None'
    assert str(headdb.errors.ClassifyInterrupted(run, 7, None)) == f"classification 7 of run {run} stored"

    def ctrl_c_while_scoring(*args, **kwargs):
        raise KeyboardInterrupt

    # Ctrl-C while the tables print, once the results are stored and --out written
    monkeypatch.undo()  # export writes again
    monkeypatch.setattr(importlib.import_module("headdb.cli"), "_print_classification", ctrl_c_while_scoring)
    code, stdout, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "--out", out)
    assert (code, stdout) == (130, "") and out.exists()
    assert err.splitlines()[-1] == (f"interrupted while printing the tables: the classification is stored "
                                    f"(classification {newest + 2} of run {run}), and {out} is written")
    out.unlink()
    monkeypatch.undo()
    monkeypatch.setattr(importlib.import_module("headdb.scores"), "store_scores", ctrl_c_while_scoring)
    code, _, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "--out", out)
    assert (code, err) == (130, "interrupted\n")
    assert int(headdb.sql(store, "SELECT max(classification_id) AS c FROM classifications")["c"][0]) == newest + 2


def test_out_is_written_whole_when_the_reader_of_the_table_goes_away(store, tmp_path):
    """`headdb classify --out t.csv | head` printed the tables first and wrote --out last: the
    reader that went away ended the command before the file was written, without a word."""
    out = tmp_path / "t.csv"
    proc = subprocess.Popen([str(HEADDB), "classify", str(store), "--roles", "local,delimiter", "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="200"))
    proc.stdout.close()  # the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert f"wrote 12 rows to {out}" in err.decode(), err
    assert len(read_export(out)) == 12


def test_a_wrong_out_extension_is_refused_before_anything_is_stored_or_computed(store, tmp_path, capsys, monkeypatch):
    before = headdb.sql(store, "SELECT count(*) AS n FROM classifications")["n"][0]
    from headdb.errors import InputError

    with pytest.raises(InputError, match="cannot export to '.xlsx'"):  # the API too
        headdb.classify(store, tau=1.0, out=tmp_path / "t.xlsx")
    assert headdb.sql(store, "SELECT count(*) AS n FROM classifications")["n"][0] == before
    accuracy_module = importlib.import_module("headdb.accuracy")
    compare_module = importlib.import_module("headdb.compare")

    def never(*args, **kwargs):
        raise AssertionError("computed before --out was checked")

    monkeypatch.setattr(compare_module, "compare", never)
    monkeypatch.setattr(accuracy_module, "accuracy", never)
    for args in (["compare", store, "1", "1"], ["accuracy", store], ["sql", store, "SELECT 1"]):
        code, _, err = run_main(capsys, monkeypatch, *args, "--out", tmp_path / "x.txt")
        assert code == 1 and err == f"error: {tmp_path / 'x.txt'}: cannot export to '.txt'; use .csv, .json or .parquet\n", err
    for args in (["compare", store, "1", "1"], ["accuracy", store], ["runs", store], ["roles", "list"]):
        code, _, err = run_main(capsys, monkeypatch, *args, "--format", "xml")
        assert code == 2 and "must be table, csv or json, not 'xml'" in err, (args, err)


def test_json_export_keeps_15_significant_digits(tmp_path):
    import json

    from headdb.query import export

    export(pd.DataFrame({"p": [1.2345678901234567e-30, 0.1234567890123456789]}), tmp_path / "x.json")
    got = [row["p"] for row in json.loads((tmp_path / "x.json").read_text())]
    np.testing.assert_allclose(got, [1.2345678901234567e-30, 0.1234567890123456789], rtol=1e-14)


def test_roles_list_and_show(tmp_path, capsys, monkeypatch):
    code, out, _ = run_main(capsys, monkeypatch, "roles", "list", "--format", "csv")
    assert code == 0
    listed = pd.read_csv(__import__("io").StringIO(out))
    assert list(listed["role"])[:3] == ["local", "delimiter", "delimiter_cls"]
    code, out, _ = run_main(capsys, monkeypatch, "roles", "show", "obj")
    assert code == 0 and out.startswith("-- name: obj") and "dobj" in out
    code, _, err = run_main(capsys, monkeypatch, "roles", "show", "nope")
    assert code == 1 and "unknown role" in err


def test_entry_point_exit_code(store, tmp_path):
    env = dict(os.environ, COLUMNS="200")
    ok = subprocess.run([str(HEADDB), "classify", str(store), "--roles", "local"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(HEADDB), "classify", str(tmp_path / "none.db")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")


def test_classify_bounds_duckdbs_memory_while_scoring(store, monkeypatch):
    """DuckDB caches the blocks it reads up to its memory limit (80% of RAM by default), so
    classification sets one on the connection that scores (docs/benchmarks.md)."""
    import importlib

    db_mod = importlib.import_module("headdb.db")
    scores_mod = importlib.import_module("headdb.scores")
    seen = []
    real = scores_mod.compute_scores

    def spy(con, *args, **kwargs):
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        return real(con, *args, **kwargs)

    monkeypatch.setattr(scores_mod, "compute_scores", spy)
    headdb.classify(store, store=False)
    assert seen == [f"{db_mod.memory_limit_mb()}.0 MiB"]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert db_mod.memory_limit_mb() == 768
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert db_mod.memory_limit_mb() == 16 * 96


def test_classify_shows_a_progress_bar_in_a_terminal_only(store, tmp_path, monkeypatch, capsys):
    """A classification scored in several pieces shows its progress on a terminal's stderr;
    piped, or with --quiet, stderr stays clean."""
    monkeypatch.setattr(importlib.import_module("headdb.scores"), "CHUNK_ROWS", 10)  # several pieces
    cli = importlib.import_module("headdb.cli")
    seen = []
    real = cli._steps_bar

    def spy(label, quiet):
        seen.append((label, quiet))
        return real(label, quiet)

    monkeypatch.setattr(cli, "_steps_bar", spy)
    code, _, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "local")
    assert code == 0 and err == "" and seen == [("scoring", False)]  # captured stderr is no terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with real("scoring", False) as progress:
        assert callable(progress)
        progress(0, 3)
        progress(3, 3)
    with real("scoring", True) as progress:
        assert progress is None
    code, _, _ = run_main(capsys, monkeypatch, "classify", store, "--roles", "local", "-q")
    assert code == 0 and seen[-1] == ("scoring", True)


def test_export_of_something_not_a_dataframe_is_refused_by_name(tmp_path):
    """`headdb.export("notadf", path)` failed with "'str' object has no attribute 'columns'"."""
    import headdb
    from headdb.errors import InputError

    with pytest.raises(InputError, match="export writes a pandas DataFrame .* not str; for a query's rows use "
                                         r"export_sql\(db, query, out\)"):
        headdb.export("notadf", tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


def test_the_table_says_which_roles_and_heads_have_no_test(tmp_path, capsys, monkeypatch):
    """A role with one sentence, and heads whose every score equals tau, are untested (p empty,
    outside the family); the table shows their means like any other, so its heading says so,
    not only the general line above all tables."""
    rng = np.random.default_rng(5)
    seqs = [simple_seq([1, 2, 1, 1], [1, None, 1, 1], ["nsubj", "root", "obj", "advmod"]) for _ in range(4)]
    att = []
    for q in seqs:
        a = dirichlet_attention(rng, 1, 3, q.length)
        a[0, 0] = 0.0
        a[0, 0, :, :2] = 0.5  # half on [CLS] in every row: delimiter_cls scores L / 2 in every sentence
        att.append(a)
    db = tmp_path / "s.db"
    build_store(db, seqs, att)
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "first.sql").write_text("-- name: first\n-- description: the first sentence only\n-- level: token\n"
                                     "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos\n"
                                     "FROM tokens WHERE sentence_id = 0\n")
    tau = seqs[0].length / 2
    code, out, err = run_main(capsys, monkeypatch, "classify", db, "--roles-dir", roles, "--roles",
                              "delimiter_cls,first", "--tau", str(tau))
    assert code == 0, err
    assert f"delimiter_cls: 0/3 heads, tau {tau:g}, n 4 sentences (1 head untested: every score equals tau)" in out, out
    assert "first: 0/3 heads, tau " + f"{tau:g}, n 1 sentence (no tests: fewer than two sentences)" in out, out
    stored = headdb.sql(db, "SELECT role, head FROM head_tests WHERE p IS NULL ORDER BY role, head")
    assert stored.values.tolist() == [["delimiter_cls", 0], ["first", 0], ["first", 1], ["first", 2]]
    assert "2 tests of 6" in out
    # the classification counts its tests as the table does, without the untested heads
    assert headdb.sql(db, "SELECT n_tests FROM classifications")["n_tests"].tolist() == [2]


def test_block_on_a_run_of_single_sentences_says_it_needs_pairs(store, capsys, monkeypatch):
    """`--roles block` on single sentences printed only "(no samples)", where a user wondered why:
    the heading says that block needs pair inputs."""
    code, out, err = run_main(capsys, monkeypatch, "classify", store, "--roles", "block,local")
    assert code == 0, err
    assert "block: 0/6 heads, tau 3, n 0 sentences (no samples: block needs pair inputs, a .tsv corpus or --pairs)" \
        in out, out
    assert "local: " in out and "needs pair inputs" not in out.split("local: ")[1]


def test_the_bar_shows_for_work_of_several_steps_only_and_goes_at_the_last(monkeypatch):
    """steps_bar starts its bar for work of more than one step that is not done at the first
    call, and stops it at the last step, not only when the command's block ends (a report goes
    on to draw its figures)."""
    from rich.progress import Progress

    from headdb.progress import steps_bar

    events: list[str] = []
    monkeypatch.setattr(Progress, "start", lambda self: events.append("start"))
    monkeypatch.setattr(Progress, "stop", lambda self: events.append("stop"))
    with steps_bar("x") as progress:
        progress(0, 1)
        progress(1, 1)
        assert events == []  # one step: no bar
    events.clear()
    with steps_bar("x") as progress:
        progress(4, 4)
        assert events == []  # done at the first call: no bar
    events.clear()
    with steps_bar("x") as progress:
        progress(0, 3)
        progress(2, 3)
        assert events == ["start"]
        progress(3, 3)
        assert events == ["start", "stop"]
    # counted in steps, or in bytes (compact's copy)
    columns: list[list[str]] = []
    monkeypatch.setattr(Progress, "start", lambda self: columns.append([type(c).__name__ for c in self.columns]))
    for in_bytes in (False, True):
        with steps_bar("x", in_bytes) as progress:
            progress(0, 2)
    assert "MofNCompleteColumn" in columns[0] and "DownloadColumn" not in columns[0]
    assert "DownloadColumn" in columns[1] and "MofNCompleteColumn" not in columns[1]
