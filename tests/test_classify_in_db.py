"""`classify()` with storing scores in the database (straight into sentence_scores) and tests one
role at a time: the same scores and tests as the in-memory path (``store=False``), in one
piece or many, in one role pass or several; and nothing stored when any step fails."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

import headdb
from headdb.db import memory_limit_mb
from role_reference import build_store, dirichlet_attention, simple_seq

scores_mod = importlib.import_module("headdb.scores")
classify_mod = importlib.import_module("headdb.classify")
TEST_COLUMNS = ["n", "mean", "std", "t", "p", "p_adj", "ci_low", "ci_high"]
SEQS = [
    simple_seq([1, 2, 1, 3, 1], [1, None, 3, 1, 1], ["nsubj", "root", "amod", "obj", "advmod:emph"]),
    simple_seq([2, 1, 1], [1, None, 1], ["nsubj:pass", "root", "dobj"]),
    simple_seq([1, 1, 2], [2, 2, None], ["amod", "nsubj", "root"]),
]


@pytest.fixture
def db(tmp_path):
    rng = np.random.default_rng(5)
    seqs = SEQS * 3
    att = [dirichlet_attention(rng, 2, 3, q.length) for q in seqs]
    path = tmp_path / "c.db"
    build_store(path, seqs, att, pairs=False, run_id=1, top_k=3)
    return path


def _stored_scores(db) -> pd.DataFrame:
    return headdb.sql(db, "SELECT role, layer, head, sentence_id, score, score_upper, n_queries FROM sentence_scores "
                          "ORDER BY role, layer, head, sentence_id")


def _expected(db):
    """The in-memory path's scores (as stored rows) and tests."""
    want_tests = headdb.classify(db, store=False)
    mem = headdb.scores(db, run=1)
    want_scores = (mem.assign(role=mem["role"].astype(str))[["role", "layer", "head", "sentence_id", "score",
                                                             "score_upper", "n_queries"]]
                   .sort_values(["role", "layer", "head", "sentence_id"]).reset_index(drop=True))
    return want_scores, want_tests


def _same(got_scores, got_tests, want_scores, want_tests):
    assert len(got_scores) == len(want_scores) > 0
    for c in ("role", "layer", "head", "sentence_id", "n_queries"):
        assert got_scores[c].astype(str).tolist() == want_scores[c].astype(str).tolist(), c
    for c in ("score", "score_upper"):
        np.testing.assert_allclose(got_scores[c], want_scores[c], rtol=1e-12, atol=1e-12)
    assert got_tests[["role", "layer", "head", "significant", "flip_possible"]].astype(str).values.tolist() == \
        want_tests[["role", "layer", "head", "significant", "flip_possible"]].astype(str).values.tolist()
    for c in TEST_COLUMNS:
        np.testing.assert_allclose(got_tests[c].astype(float), want_tests[c].astype(float), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=c)


@pytest.mark.parametrize("chunk_rows,counter_bits", [(None, None), (20, None), (None, 8), (7, 8)],
                         ids=["one-query", "pieces", "passes", "pieces-and-passes"])
def test_scores_and_tests_stored_in_the_database_equal_the_in_memory_ones(db, monkeypatch, chunk_rows, counter_bits):
    want_scores, want_tests = _expected(db)
    if chunk_rows is not None:
        monkeypatch.setattr(scores_mod, "CHUNK_ROWS", chunk_rows)
    if counter_bits is not None:  # two roles per pass instead of all of them
        monkeypatch.setattr(scores_mod, "COUNTER_BITS", counter_bits)
    calls = []
    real = scores_mod.store_scores
    passes_seen = []

    def spy(*args):
        calls.append(len(args[4]))
        passes_seen.append(args[4])
        return real(*args)

    monkeypatch.setattr(scores_mod, "store_scores", spy)
    got_tests = headdb.classify(db)
    assert len(calls) == 1 and passes_seen[0] == []  # each pass's sieve is let go once scored
    if counter_bits is not None:
        assert calls[0] > 1  # several role passes
    con = headdb_connect(db)
    try:
        n_pieces = len(scores_mod._sentence_ranges(con, 1))
    finally:
        con.close()
    assert (n_pieces > 1) == (chunk_rows is not None)
    _same(_stored_scores(db), got_tests, want_scores, want_tests)
    # every column of head_tests is the returned one of that name (not only mean: a swapped pair of
    # columns in the INSERT went unseen)
    stored = headdb.sql(db, "SELECT * FROM head_tests ORDER BY role, layer, head")
    mine = got_tests.sort_values(["role", "layer", "head"]).reset_index(drop=True)
    assert stored["run_id"].tolist() == mine["run"].tolist()
    for c in ("role", "layer", "head", "n", "significant", "flip_possible"):
        assert stored[c].astype(str).tolist() == mine[c].astype(str).tolist(), c
    for c in ("mean", "std", "tau", "t", "p", "p_adj", "ci_low", "ci_high"):
        np.testing.assert_allclose(stored[c].astype(float), mine[c].astype(float), equal_nan=True, err_msg=c)
    from headdb.roles import load_roles

    sha = {r.name: r.sha256 for r in load_roles(None)}
    assert stored["role_sha256"].tolist() == [sha[r] for r in stored["role"]]
    assert stored["classification_id"].nunique() == 1
    assert stored["classification_id"].iloc[0] == got_tests.attrs["classification_id"]


def test_scoring_runs_under_classifications_memory_limit(db, monkeypatch):
    seen = []
    real = scores_mod.store_scores

    def spy(con, *args):
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        return real(con, *args)

    monkeypatch.setattr(scores_mod, "store_scores", spy)
    headdb.classify(db, roles="local")
    assert seen == [f"{memory_limit_mb()}.0 MiB"]


@pytest.mark.parametrize("where", ["store_scores", "stored_head_moments"])
def test_a_failure_while_scoring_or_testing_stores_nothing(db, monkeypatch, where):
    """The previous classification stays as it was, scores and tests alike."""
    headdb.classify(db)
    before = (_stored_scores(db), headdb.sql(db, "SELECT * FROM head_tests ORDER BY role, layer, head"),
              headdb.sql(db, "SELECT count(*) AS n FROM classifications")["n"][0])
    real = getattr(scores_mod, where)

    def failing(*args):
        real(*args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(scores_mod, where, failing)
    with pytest.raises(RuntimeError, match="disk full"):
        headdb.classify(db, tau=1.0)
    after = (_stored_scores(db), headdb.sql(db, "SELECT * FROM head_tests ORDER BY role, layer, head"),
             headdb.sql(db, "SELECT count(*) AS n FROM classifications")["n"][0])
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_frame_equal(after[1], before[1])
    assert after[2] == before[2] == 1


def headdb_connect(db):
    from headdb.db import connect

    return connect(db, read_only=True)


@pytest.mark.parametrize("store", [True, False])
def test_progress_counts_every_scoring_query(db, monkeypatch, store):
    """A long classification reports its scoring queries as they finish: every piece of every
    role pass, from (0, total) to (total, total)."""
    monkeypatch.setattr(scores_mod, "CHUNK_ROWS", 7)
    monkeypatch.setattr(scores_mod, "COUNTER_BITS", 8)  # two roles per pass
    con = headdb_connect(db)
    try:
        n_pieces = len(scores_mod._sentence_ranges(con, 1))
    finally:
        con.close()
    seen = []
    headdb.classify(db, store=store, progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert n_pieces > 1 and total % n_pieces == 0 and total // n_pieces > 1  # several pieces and passes
    assert seen == [(i, total) for i in range(total + 1)]


def test_progress_takes_true_false_or_a_callable(db, capsys):
    """`progress=False` failed with "'bool' object is not callable" outside ingest (which takes
    True for a bar): classify, accuracy, report and compact take True (a bar on stderr), False or
    None (none) and a callable, and refuse anything else by name."""
    from headdb.errors import InputError

    quiet = headdb.classify(db, run=1, progress=False)
    with_bar = headdb.classify(db, run=1, progress=True)
    pd.testing.assert_frame_equal(quiet[TEST_COLUMNS], with_bar[TEST_COLUMNS])
    calls = []
    headdb.classify(db, run=1, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    for flag in (False, True):
        assert len(headdb.accuracy(db, run=1, progress=flag)) > 0
        before, after = headdb.compact(db, progress=flag)
        assert before > 0 and after > 0
    with pytest.raises(InputError, match="progress must be a callable progress.done, total., True .a bar on "
                                         "stderr. or False, not 'yes'"):
        headdb.classify(db, run=1, progress="yes")
    capsys.readouterr()


def test_progress_true_is_a_bar_in_the_works_unit_and_false_none(db, monkeypatch):
    """progress=True hands the function steps_bar's callable, counted in the function's unit
    (compact's in bytes); False hands it None, no bar."""
    progress_mod = importlib.import_module("headdb.progress")
    real_bar, real_store = progress_mod.steps_bar, scores_mod.store_scores
    bars, given = [], []

    def bar(label, in_bytes=False):
        bars.append((label, in_bytes))
        return real_bar(label, in_bytes)

    def store_scores(*args):
        given.append(args[5])
        return real_store(*args)

    monkeypatch.setattr(progress_mod, "steps_bar", bar)
    monkeypatch.setattr(scores_mod, "store_scores", store_scores)
    headdb.classify(db, run=1, roles="local", progress=False)
    assert given == [None] and bars == []
    headdb.classify(db, run=1, roles="local", progress=True)
    assert callable(given[1]) and bars == [("scoring", False)]
    headdb.compact(db, progress=True)
    assert bars[1:] == [("compacting", True)]


def test_alpha_and_tau_take_numpy_numbers_and_refuse_others_by_name(db):
    """tau as a numpy number (a value read from a DataFrame) failed in DuckDB's INSERT ("Unable to
    transform python value of type numpy.float32"), alpha=np.float32(0.05) was refused as if out
    of range, tau='3' was a bare TypeError and tau=True was taken as 1.0."""
    from headdb.errors import InputError

    want = headdb.classify(db, run=1, roles="local", tau=2.0, alpha=0.05)
    for tau, alpha in ((np.float32(2.0), np.float32(0.05)), (np.int64(2), np.float64(0.05))):
        got = headdb.classify(db, run=1, roles="local", tau=tau, alpha=alpha)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6)
        assert type(got.attrs["alpha"]) is float
    assert headdb.sql(db, "SELECT DISTINCT tau_override FROM classifications")["tau_override"].tolist() == [2.0]
    for tau in ("3", True, float("nan")):
        with pytest.raises(InputError, match=f"^tau must be a finite number, not {tau!r}$"):
            headdb.classify(db, run=1, tau=tau)
    with pytest.raises(InputError, match="^alpha must be between 0 and 1, not '0.05'$"):
        headdb.classify(db, run=1, alpha="0.05")
