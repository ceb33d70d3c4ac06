"""Run comparison on a hand-made store with known answers (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import headdb
from handmade_store import DIFFS, build_results_store
from headdb.cli import app
from headdb.compare import adjust_pvalues, layer_profile, role_changes
from headdb.errors import DatabaseError, InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_results_store(tmp_path_factory.mktemp("compare") / "r.db")


def _row(df, role, layer, head):
    r = df[(df["role"] == role) & (df["layer"] == layer) & (df["head"] == head)]
    assert len(r) == 1
    return r.iloc[0]


def test_paired_golden(store):
    df = headdb.compare(store, "base", "tuned")
    assert df.attrs["basis"] == "paired" and (df["basis"] == "paired").all()
    assert len(df) == 3 * 2 * 3
    r = _row(df, "local", 0, 0)
    # d = [1, 2, 3, 2]: mean 2, sd sqrt(2/3), t = 2 / (sd / 2) = 4.899, two-sided df 3
    t = 2 / (math.sqrt(2 / 3) / 2)
    assert r.n == 4 and r.mean_a == pytest.approx(5.5) and r.mean_b == pytest.approx(7.5)
    assert r.mean_diff == pytest.approx(2.0) and r.std_diff == pytest.approx(math.sqrt(2 / 3))
    assert r.t == pytest.approx(t) and r.p == pytest.approx(2 * stats.t.sf(t, 3))
    # BH over 18 tests: p = 0 (nsubj 1,2), this one, 16 x p = 1 -> p_adj = p * 18 / 2
    assert r.p_adj == pytest.approx(r.p * 18 / 2)
    assert not r.changed and r.role_change == "lost"
    s = _row(df, "nsubj", 1, 2)  # every sentence down by 0.5: degenerate, p = 0
    assert s.mean_diff == pytest.approx(-0.5) and s.t == -math.inf and s.p == 0 and s.changed
    assert s.direction == "down" and s.role_change == "kept"
    g = _row(df, "local", 1, 0)
    assert g.role_change == "gained" and g.mean_diff == 0 and g.p == 1.0
    assert df["changed"].sum() == 1
    assert set(map(tuple, role_changes(df)[["role", "layer", "head", "role_change"]].itertuples(index=False))) == {
        ("local", 0, 0, "lost"), ("local", 1, 0, "gained")}


def test_correction_none_and_bonferroni(store):
    none = headdb.compare(store, "base", "tuned", correction="none")
    assert _row(none, "local", 0, 0).changed  # p = 0.016 < 0.05 uncorrected
    bonf = headdb.compare(store, "base", "tuned", correction="bonferroni")
    assert _row(bonf, "local", 0, 0).p_adj == pytest.approx(min(1.0, _row(none, "local", 0, 0).p * 18))


def test_self_compare_shows_no_change(store):
    df = headdb.compare(store, "base", "base")
    assert not df["changed"].any()
    assert (df["mean_diff"] == 0).all() and (df["p"] == 1).all()
    assert set(df["role_change"]) <= {"kept", "none"}
    prof = layer_profile(df)
    assert (prof[["n_up", "n_down", "gained", "lost"]] == 0).all().all()
    assert (prof["mean_abs_diff"] == 0).all()


def test_layer_profile_golden(store):
    prof = layer_profile(headdb.compare(store, "base", "tuned"))
    r = prof[(prof.role == "local") & (prof.layer == 0)].iloc[0]
    assert r.mean_diff == pytest.approx(2 / 3) and r.lost == 1 and r.gained == 0
    assert r.n_significant_a == 2 and r.n_significant_b == 1
    r = prof[(prof.role == "nsubj") & (prof.layer == 1)].iloc[0]
    assert r.n_down == 1 and r.mean_diff == pytest.approx(-0.5 / 3)


def test_shapes_differ_uses_layer_counts(store):
    df = headdb.compare(store, "base", "small")
    assert df.attrs["basis"] == "layer_counts" and "shapes differ" in df.attrs["note"]
    got = {(r.role, r.layer): (r.n_significant_a, r.n_significant_b, r.change) for r in df.itertuples()}
    assert got == {("local", 0): (2, 2, 0), ("local", 1): (1, 0, -1), ("delimiter", 0): (1, 1, 0),
                   ("delimiter", 1): (3, 0, -3), ("nsubj", 0): (0, 0, 0), ("nsubj", 1): (1, 0, -1)}
    assert "t" not in df.columns


def test_roles_and_errors(store):
    df = headdb.compare(store, 1, 2, roles=["nsubj"])
    assert set(df["role"]) == {"nsubj"} and _row(df, "nsubj", 1, 2).p_adj == 0
    with pytest.raises(InputError, match="correction"):
        headdb.compare(store, 1, 2, correction="fdr")
    with pytest.raises(InputError, match="not classified"):
        headdb.compare(store, 1, 2, roles="amod")


def test_different_corpora_refused(tmp_path):
    from handmade_store import ROLES, SIG_A, add_classification, add_corpus, add_run

    con = headdb.connect(tmp_path / "two.db")
    add_corpus(con, 2, corpus_id=1)
    add_corpus(con, 2, corpus_id=2)
    add_run(con, 1, 1, 1, 2, corpus_id=1)
    add_run(con, 2, 1, 1, 2, corpus_id=2)
    add_classification(con, 1, ROLES, SIG_A, 1, 1)
    add_classification(con, 2, ROLES, SIG_A, 1, 1)
    con.close()
    with pytest.raises(DatabaseError, match="different corpora"):
        headdb.compare(tmp_path / "two.db", 1, 2)


def test_adjust_pvalues():
    p = np.array([0.01, 0.04, np.nan, 0.03])
    assert np.isnan(adjust_pvalues(p, "bh")[2])
    assert adjust_pvalues(p, "bonferroni")[[0, 1, 3]].tolist() == pytest.approx([0.03, 0.12, 0.09])
    assert adjust_pvalues(p, "holm")[[0, 1, 3]].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert adjust_pvalues(p, "bh")[[0, 1, 3]].tolist() == pytest.approx([0.03, 0.04, 0.04])


def test_cli_compare(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--out", str(tmp_path / "c.csv")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_csv(tmp_path / "c.csv")
    assert len(df) == 18 and {"mean_diff", "p_adj", "role_change"} <= set(df.columns)
    # with --out the tables are shown as well (as classify does), and the note says heads, not roles
    assert "roles gained and lost" in res.output and "per-layer profile of change" in res.output
    assert "1 head gained a role, 1 lost one" in res.output
    # json: one document (it printed two); csv: one table, the per-layer profile
    import json

    res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--format", "json"])
    doc = json.loads(res.stdout)
    assert {(r["role"], r["layer"], r["head"], r["role_change"]) for r in doc["roles_gained_and_lost"]} == {
        ("local", 0, 0, "lost"), ("local", 1, 0, "gained")}
    assert len(doc["per_layer_profile"]) == 6
    res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--format", "csv"])
    assert res.stdout.splitlines()[0].startswith("role,layer,n_heads") and len(res.stdout.splitlines()) == 7
    res = runner.invoke(app, ["compare", str(store), "base", "small", "--format", "csv"])
    assert res.exit_code == 0 and "shapes differ" in res.output
    assert DIFFS  # the store's known differences drive the golden values above


def test_a_role_classified_from_different_sql_in_the_two_runs_is_refused(tmp_path):
    """Editing a role file between the classifications of two runs changes its sieve: the paired
    differences would mix the edit with the models' change. Refused until both use one version."""
    from role_reference import build_store, dirichlet_attention, simple_seq

    rng = np.random.default_rng(8)
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(5)]
    db = tmp_path / "v.db"
    for run_id in (1, 2):
        build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs], run_id=run_id,
                    add_corpus=run_id == 1)
    roles = tmp_path / "roles"
    roles.mkdir()
    role = roles / "near.sql"
    text = ("-- name: near\n-- description: d\n-- level: token\n-- params: window=1\n"
            "SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos\n"
            "FROM tokens q JOIN tokens k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id\n"
            " AND abs(k.token_pos - q.token_pos) <= getvariable('window')\n")
    role.write_text(text)
    headdb.classify(db, run=1, roles="near,local", roles_dir=roles)
    role.write_text(text.replace("window=1", "window=2"))
    headdb.classify(db, run=2, roles="near,local", roles_dir=roles)
    with pytest.raises(DatabaseError, match=r"role 'near' was classified from different SQL for run 1 .* and run 2"):
        headdb.compare(db, 1, 2)
    assert set(headdb.compare(db, 1, 2, roles="local")["role"]) == {"local"}  # the other roles still compare
    headdb.classify(db, run=1, roles="near", roles_dir=roles)  # now both from window=2
    assert set(headdb.compare(db, 1, 2)["role"]) == {"near", "local"}
    # a new description, comment or tau leaves the sieve as it was: still comparable
    role.write_text(text.replace("window=1", "window=2\n-- tau: 2\n--\n-- the window's pairs")
                    .replace("description: d", "description: nearby tokens"))
    headdb.classify(db, run=2, roles="near", roles_dir=roles)
    assert headdb.sql(db, "SELECT count(DISTINCT role_sha256) AS n FROM head_tests WHERE role = 'near'")["n"][0] == 2
    assert set(headdb.compare(db, 1, 2)["role"]) == {"near", "local"}


def test_scores_equal_to_rounding_compare_as_unchanged():
    """The same edges scored twice differ in a last bit (DuckDB adds in parallel): two runs over
    identical attention gave t = +-1, p = 0.32 instead of t = 0, p = 1."""
    from headdb.compare import ROUNDING, _paired_test, differences

    a = np.array([3.2, 1.7, 4.9, 2.2])
    b = a.copy()
    b[1] = np.nextafter(b[1], np.inf)
    b[3] = np.nextafter(np.nextafter(b[3], 0), 0)
    assert (b != a).sum() == 2 and stats.ttest_rel(b, a).pvalue < 1  # scipy sees a change in the last bits
    assert _paired_test(a, b) == (0.0, 1.0)
    assert (differences(a, b) == 0).all()
    c = a.copy()
    c[1] *= 1 + 100 * ROUNDING  # a change, however small, beyond rounding is tested as it is
    t, p = _paired_test(a, c)
    assert (t, p) == pytest.approx((stats.ttest_rel(c, a).statistic, stats.ttest_rel(c, a).pvalue), rel=1e-12)
    d = a + np.array([0.5, -0.2, 0.1, 0.3])
    assert _paired_test(a, d) == pytest.approx((stats.ttest_rel(d, a).statistic, stats.ttest_rel(d, a).pvalue))


@pytest.mark.parametrize("change, unknown, small", [
    ("UPDATE classifications SET alpha = 0.01 WHERE run_id = 2", {"local", "nsubj", "delimiter"}, False),
    ("UPDATE classifications SET correction = 'holm' WHERE run_id = 1", {"local", "nsubj", "delimiter"}, True),
    ("UPDATE classifications SET roles = 'local' WHERE run_id = 1", {"local", "nsubj", "delimiter"}, True),
    ("UPDATE head_tests SET tau = 2 WHERE run_id = 2 AND role = 'local'", {"local"}, False),
    ("SELECT 1", set(), False),
    # no correction: the family cannot change a decision, so other roles in it do not matter
    ("UPDATE classifications SET correction = 'none'; UPDATE classifications SET roles = 'local' WHERE run_id = 1",
     set(), False),
])
def test_gained_and_lost_only_between_tests_decided_alike(store, tmp_path, change, unknown, small):
    """A head with the same scores in both runs was "gained" when run A's role was classified
    alone (a family of 72 tests) and run B's with every role (648): the correction's family, alpha,
    correction and tau must match, else role_change is unknown, and the note says why."""
    import shutil

    import duckdb

    db = tmp_path / "c.db"
    shutil.copy(store, db)
    con = duckdb.connect(str(db))
    con.execute(change)
    con.close()
    df = headdb.compare(db, "base", "tuned")
    assert set(df.attrs["unlike_decisions"]) == unknown
    assert set(df.loc[df["role_change"] == "unknown", "role"]) == unknown
    for role in unknown:
        assert f"{role}: the runs' tests were decided differently (run 1: classification 1 of" in df.attrs["note"]
    assert ("its role_change is unknown" in df.attrs["note"]) == bool(unknown)
    if not unknown:
        assert (df["role_change"] != "unknown").all()
    small_note = headdb.compare(db, "base", "small")  # layer counts only: said in the note as well
    assert ("its counts do not compare" in small_note.attrs["note"]) == small


def test_compare_says_when_shared_sentences_differ_in_truncation_or_length(tmp_path):
    """A truncated run compared with a whole one reported the cut's changes ("56 lost") as the
    model's, without a word about the truncation that run_sentences records."""
    import duckdb

    db = build_results_store(tmp_path / "t.db")
    assert "truncated in one run" not in headdb.compare(db, "base", "tuned").attrs["note"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'truncated' WHERE run_id = (SELECT run_id FROM runs "
                "WHERE run_name = 'tuned') AND sentence_id IN (SELECT min(sentence_id) FROM run_sentences)")
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert "\n1 of the shared sentences were truncated in one run and not in the other, or have another length" \
        in note, note
