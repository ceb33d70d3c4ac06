"""Layer distribution, co-location and summaries on a hand-made store with known answers."""

from __future__ import annotations

import pandas as pd
import pytest

import headdb
from handmade_store import build_results_store
from headdb.errors import DatabaseError, InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_results_store(tmp_path_factory.mktemp("analysis") / "r.db")


def test_layer_distribution_golden(store):
    df = headdb.layer_distribution(store, "base")
    got = {(r.role, r.layer): (r.n_significant, r.n_tested) for r in df.itertuples()}
    assert got == {("local", 0): (2, 3), ("local", 1): (1, 3), ("delimiter", 0): (1, 3),
                   ("delimiter", 1): (3, 3), ("nsubj", 0): (0, 3), ("nsubj", 1): (1, 3)}
    assert list(dict.fromkeys(df["role"])) == ["local", "delimiter", "nsubj"]  # classification order


def test_colocation_golden(store):
    m = headdb.colocation_matrix(store, "base")
    expected = pd.DataFrame([[3, 2, 1], [2, 4, 1], [1, 1, 1]], index=["local", "delimiter", "nsubj"],
                            columns=["local", "delimiter", "nsubj"])
    assert (m.to_numpy() == expected.to_numpy()).all()
    assert list(m.index) == list(expected.index) and list(m.columns) == list(expected.columns)
    long = headdb.colocation(store, 1, roles="nsubj,local")
    assert [(r.role_a, r.role_b, r.n_heads) for r in long.itertuples()] == [
        ("nsubj", "nsubj", 1), ("nsubj", "local", 1), ("local", "nsubj", 1), ("local", "local", 3)]


def test_multi_role_heads_golden(store):
    df = headdb.multi_role_heads(store, "base")
    assert [(r.layer, r.head, r.n_roles, r.roles) for r in df.itertuples()] == [
        (0, 1, 2, "local,delimiter"), (1, 2, 3, "local,delimiter,nsubj")]
    assert len(headdb.multi_role_heads(store, "base", min_roles=3)) == 1
    # of chosen roles only (the report's --roles listed heads by roles it was not asked about)
    df = headdb.multi_role_heads(store, "base", roles="nsubj,local")
    assert [(r.layer, r.head, r.n_roles, r.roles) for r in df.itertuples()] == [(1, 2, 2, "local,nsubj")]
    df = headdb.multi_role_heads(store, "base", roles=["delimiter", "nsubj"], min_roles=1)
    assert [(r.layer, r.head, r.roles) for r in df.itertuples()] == [
        (0, 1, "delimiter"), (1, 0, "delimiter"), (1, 1, "delimiter"), (1, 2, "delimiter,nsubj")]


def test_role_summary_golden(store):
    df = headdb.role_summary(store, "base")
    assert list(df["role"]) == ["local", "delimiter", "nsubj"]
    assert list(df["n_significant"]) == [3, 4, 1]
    assert list(df["n_tested"]) == [6, 6, 6]
    assert df["share_significant"].tolist() == pytest.approx([0.5, 4 / 6, 1 / 6])


def test_views_are_queryable(store):
    df = headdb.sql(store, "SELECT role, sum(n_significant) AS n FROM role_layer_distribution "
                           "WHERE run_id = 1 GROUP BY role ORDER BY role")
    assert dict(zip(df["role"], df["n"])) == {"delimiter": 4, "local": 3, "nsubj": 1}


def test_errors(store, tmp_path):
    with pytest.raises(InputError, match="not classified"):
        headdb.layer_distribution(store, "base", roles=["amod"])
    with pytest.raises(DatabaseError, match="no run"):
        headdb.role_summary(store, "nope")
    con = headdb.connect(tmp_path / "empty.db")
    con.close()
    from handmade_store import add_corpus, add_run

    con = headdb.connect(tmp_path / "empty.db")
    add_corpus(con, 2)
    add_run(con, 1, 1, 1, 2)
    con.close()
    with pytest.raises(DatabaseError, match="headdb classify"):
        headdb.layer_distribution(tmp_path / "empty.db")


def test_a_run_without_results_names_the_classify_that_gives_them(tmp_path):
    """`headdb report --run 1` (or compare) of an unclassified run said to run `headdb classify`,
    which classifies the latest run: here run 2, and the report of run 1 still failed."""
    from handmade_store import add_corpus, add_run

    db = tmp_path / "two.db"
    con = headdb.connect(db)
    add_corpus(con, 2)
    add_run(con, 1, 1, 1, 2)
    add_run(con, 2, 1, 1, 2)
    con.close()
    for call in (lambda: headdb.layer_distribution(db, 1), lambda: headdb.compare(db, 1, 2)):
        with pytest.raises(DatabaseError) as caught:
            call()
        # the store named, so that the command can be pasted (it said `headdb classify DB --run 1`)
        assert str(caught.value) == f"run 1 has no classification results; run `headdb classify {db} --run 1` first"


def test_summary_caps_duckdbs_memory_so_it_does_not_grow_with_the_store(tmp_path, monkeypatch):
    """`headdb summary` scanned the run's edges on a connection of DuckDB's defaults, which keeps
    every block it reads cached up to 80% of RAM: its peak RSS grew with the store (271 MB for
    19 M edges, 459 MB for 57 M). It now reads with DuckDB's memory capped, as classify does."""
    import headdb.db
    import headdb.store

    path = build_results_store(tmp_path / "s.db")
    monkeypatch.setattr(headdb.db, "memory_limit_mb", lambda: 321)
    seen = []
    real = headdb.store.run_summary

    def spy(con, run_id):
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        return real(con, run_id)

    monkeypatch.setattr(headdb.store, "run_summary", spy)
    headdb.summary(path, 1)
    assert seen and "321" in seen[0], seen


def test_roles_are_a_comma_string_or_any_list_of_names(store, tmp_path):
    """``roles`` from a DataFrame's column or a numpy array failed with numpy's 'truth value of a
    Series is ambiguous' (``roles or []``), an int with "'int' object is not iterable" and a list
    holding a number with a TypeError from str.join; the same roles as a list or a string
    work, and anything else is an InputError naming the parameter."""
    import numpy as np

    picked = headdb.role_summary(store, "base")["role"].head(2)  # local, delimiter
    expected = headdb.layer_distribution(store, "base", ["local", "delimiter"])
    for roles in (picked, np.array(["local", "delimiter"]), ("local", "delimiter"), "local, delimiter"):
        pd.testing.assert_frame_equal(headdb.layer_distribution(store, "base", roles), expected)
        assert list(headdb.compare(store, "base", "tuned", roles)["role"].unique()) == ["local", "delimiter"]
    assert [r.name for r in headdb.load_roles(None, picked)] == ["local", "delimiter"]
    for roles in (3, ["local", 3], b"local"):
        for call in (lambda: headdb.layer_distribution(store, "base", roles),
                     lambda: headdb.compare(store, "base", "tuned", roles),
                     lambda: headdb.load_roles(None, roles),
                     lambda: headdb.classify(tmp_path / "none.db", roles=roles)):
            with pytest.raises(InputError, match=r"^roles must be role names: a list of strings or one "):
                call()


def test_min_roles_is_a_whole_number_of_at_least_one(store):
    """multi_role_heads(min_roles='2') failed with "'<' not supported between instances of 'str'
    and 'int'", and min_roles=2.5 ran as if it were 3 (count(*) >= 2.5)."""
    import numpy as np

    assert len(headdb.multi_role_heads(store, "base", np.int64(3))) == 1
    for bad in ("2", 2.5, 0, True):
        with pytest.raises(InputError, match=f"^min_roles must be a whole number of at least 1, not {bad!r}$"):
            headdb.multi_role_heads(store, "base", bad)


def test_layer_distribution_counts_only_tested_heads_as_tested(store, tmp_path):
    """An untested head (p NULL: fewer than two scores, or every score equal to tau) is stored as
    not significant; it is no head tested for the role, so n_tested leaves it out. Recomputed from
    head_tests."""
    import shutil

    db = tmp_path / "u.db"
    shutil.copy(store, db)
    headdb.sql(db, "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false "
                   "WHERE run_id = 1 AND role = 'local' AND layer = 0 AND head = 2", write=True)
    tests = headdb.sql(db, "SELECT role, layer, p, significant FROM head_tests WHERE run_id = 1")
    df = headdb.layer_distribution(db, "base")
    got = {(r.role, r.layer): (r.n_significant, r.n_tested) for r in df.itertuples()}
    want = {(role, int(layer)): (int(g["significant"].sum()), int(g["p"].notna().sum()))
            for (role, layer), g in tests.groupby(["role", "layer"])}
    assert got == want
    assert got[("local", 0)][1] < (tests["role"].eq("local") & tests["layer"].eq(0)).sum()
