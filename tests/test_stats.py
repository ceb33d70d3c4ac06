"""The per-head tests and corrections against scipy and hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headdb.stats import RESULT_COLUMNS, adjust, head_tests, moment_tests


def test_corrections_by_hand():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.20])
    np.testing.assert_allclose(adjust(p, "none"), p)
    np.testing.assert_allclose(adjust(p, "bonferroni"), [0.04, 0.16, 0.12, np.nan, 0.8])
    # holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, made monotone
    np.testing.assert_allclose(adjust(p, "holm"), [0.04, 0.09, 0.09, np.nan, 0.20])
    # bh: sorted p * m / rank = 0.04, 0.06, 0.0533, 0.20, then cumulative minimum from the top
    np.testing.assert_allclose(adjust(p, "bh"), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, np.nan, 0.20])
    with pytest.raises(ValueError):
        adjust(p, "fdr")


def _frame(values: dict[tuple[int, int], list[float]], role="r", upper_shift=0.0):
    rows = [{"role": role, "layer": l, "head": h, "sentence_id": s, "score": v, "score_upper": v + upper_shift}
            for (l, h), vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_one_head_matches_scipy_and_the_documented_interval():
    s = [3.5, 4.1, 2.9, 5.0, 3.8]
    res = head_tests(_frame({(0, 0): s}), [(0, 0)], ["r"], 3.0, alpha=0.1, correction="none", run=7)
    assert list(res.columns) == RESULT_COLUMNS
    row = res.iloc[0]
    ref = stats.ttest_1samp(s, 3.0, alternative="greater")
    assert row["t"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    assert row["std"] == pytest.approx(np.std(s, ddof=1)) and row["n"] == 5 and row["run"] == 7
    lo, hi = stats.ttest_1samp(s, 3.0).confidence_interval(0.9)  # two-sided (1 - alpha)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert bool(row["significant"]) == (ref.pvalue < 0.1)


def test_small_samples_are_untested_and_outside_the_family():
    heads = [(0, 0), (0, 1)]
    df = pd.concat([_frame({(0, 0): [5.0], (0, 1): [4.0]}, role="one"),
                    _frame({(0, 0): [5.0, 6.0, 5.5], (0, 1): [1.0, 1.2, 0.9]}, role="r")])
    res = head_tests(df, heads, ["one", "r", "empty"], 3.0, correction="bonferroni")
    one = res[res["role"] == "one"]
    assert (one["n"] == 1).all() and one["p"].isna().all() and not one["significant"].any()
    r = res[res["role"] == "r"]
    # the family holds only the two defined tests
    np.testing.assert_allclose(r["p_adj"], np.minimum(1, 2 * r["p"]))
    assert (res.loc[res["role"] == "empty", "n"] == 0).all()


def test_flip_possible_when_the_upper_bound_changes_the_decision():
    vals = {(0, 0): [2.8, 3.0, 2.9, 3.1], (0, 1): [9.0, 9.5, 10.0, 9.2]}
    res = head_tests(_frame(vals, upper_shift=1.0), [(0, 0), (0, 1)], ["r"], 3.0, correction="none")
    by_head = res.set_index("head")
    assert not by_head.loc[0, "significant"] and by_head.loc[0, "flip_possible"]
    assert by_head.loc[1, "significant"] and not by_head.loc[1, "flip_possible"]


def test_tests_and_bh_are_scipys_numbers_bit_for_bit():
    """headdb computes the t-test with scipy.special (scipy.stats costs 0.4 s to import); the
    numbers must be exactly scipy.stats.ttest_1samp's and false_discovery_control's."""
    import warnings

    from headdb.stats import _bh, _one_role

    rng = np.random.default_rng(5)
    for trial in range(200):
        h, n = int(rng.integers(1, 12)), int(rng.integers(2, 50))
        v = rng.gamma(2.0, 2.0, size=(h, n))
        if trial % 4 == 1:
            v[0] = 3.0  # constant and equal to tau: t and p undefined (NaN)
        elif trial % 4 == 2:
            v[0] = 5.0  # constant above tau: t = inf, p = 0
        elif trial % 4 == 3:
            v = np.round(v, 1)  # ties
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        got = _one_role(v, 3.0, alpha)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ref = stats.ttest_1samp(v, 3.0, axis=1, alternative="greater")
            half = stats.t.isf(alpha / 2, n - 1) * v.std(axis=1, ddof=1) / np.sqrt(n)
        assert np.array_equal(got["t"], ref.statistic, equal_nan=True)
        assert np.array_equal(got["p"], ref.pvalue, equal_nan=True)
        assert np.array_equal(got["ci_low"], v.mean(axis=1) - half, equal_nan=True)
        assert np.array_equal(got["ci_high"], v.mean(axis=1) + half, equal_nan=True)
        q = rng.random(int(rng.integers(1, 200)))
        q = np.round(q, 2) if trial % 2 else q  # ties among p-values
        assert np.array_equal(_bh(q), stats.false_discovery_control(q, method="bh"))


def test_classify_does_not_import_scipy_stats(tmp_path):
    import subprocess
    import sys

    code = ("import sys, headdb.stats as s, pandas as pd\n"
            "df = pd.DataFrame({'role': ['r'] * 3, 'layer': [0] * 3, 'head': [0] * 3, 'sentence_id': [0, 1, 2],"
            " 'score': [3.5, 4.0, 5.0], 'score_upper': [3.5, 4.0, 5.0]})\n"
            "s.head_tests(df, [(0, 0)], ['r'], 3.0)\n"
            "print('scipy.stats' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sorted_and_shuffled_scores_give_the_same_tests_bit_for_bit():
    """classify hands over scores sorted by role, layer, head, sentence (read as a reshape);
    any other order goes through the general scatter. Both must give the same numbers."""
    rng = np.random.default_rng(11)
    heads = [(layer, head) for layer in range(3) for head in range(4)]
    rows = [(role, layer, head, s) for role in ("a", "b") for layer, head in heads for s in (3, 7, 8, 20, 21)]
    rows += [("zzz", 0, 0, 1)]  # a role that is not asked for is ignored
    df = pd.DataFrame(rows, columns=["role", "layer", "head", "sentence_id"])
    df["score"] = rng.gamma(2.0, 2.0, len(df))
    df["score_upper"] = df["score"] + rng.random(len(df))
    df["role"] = pd.Categorical(df["role"], categories=["a", "b", "zzz"])
    roles = ["a", "b", "c"]  # c has no scores: n = 0
    in_order = head_tests(df, heads, roles, {"a": 3.0, "b": 4.0, "c": 3.0})
    shuffled = head_tests(df.sample(frac=1.0, random_state=3), heads, roles, {"a": 3.0, "b": 4.0, "c": 3.0})
    pd.testing.assert_frame_equal(in_order, shuffled, check_exact=True)
    assert (in_order.loc[in_order["role"] == "c", "n"] == 0).all()
    assert (in_order.loc[in_order["role"] != "c", "n"] == 5).all()
    # one score missing: an error in either order, never a silent NaN
    for frame in (df.drop(index=4), df.drop(index=4).sample(frac=1.0, random_state=1)):
        with pytest.raises(ValueError, match="scores missing"):
            head_tests(frame, heads, roles, 3.0)


def _moments_from_duckdb(df: pd.DataFrame, roles: list[str]) -> dict:
    """classify's moments: ``stored_head_moments`` over a sentence_scores table holding ``df``."""
    import duckdb

    from headdb.scores import stored_head_moments

    con = duckdb.connect()
    con.execute("CREATE TABLE sentence_scores (run_id INTEGER, role VARCHAR, layer SMALLINT, head SMALLINT, "
                "sentence_id INTEGER, score DOUBLE, score_upper DOUBLE)")
    con.register("frame", df.assign(run_id=1, role=df["role"].astype(str)))
    con.execute("INSERT INTO sentence_scores SELECT run_id, role, layer, head, sentence_id, score, score_upper "
                "FROM frame")
    con.execute("INSERT INTO sentence_scores VALUES (2, 'a', 0, 0, 0, 1e9, 1e9)")  # another run's: ignored
    return stored_head_moments(con, 1, roles)


@pytest.mark.parametrize("correction", ["bh", "holm", "none"])
def test_tests_from_duckdbs_moments_equal_the_tests_from_the_scores(correction):
    """classify tests each head from the mean and variance DuckDB computes where the scores are
    stored. Same numbers and decisions as from the scores, to float rounding, in the edge cases
    too: a role with one sentence (untested), a role without scores (n = 0), constant scores
    (t infinite) and constant scores equal to tau (t and p NaN)."""
    rng = np.random.default_rng(4)
    heads = [(layer, head) for layer in range(2) for head in range(3)]
    rows = [(role, layer, head, s) for role in ("a", "b") for layer, head in heads for s in range(40)]
    rows += [("one", layer, head, 5) for layer, head in heads]
    df = pd.DataFrame(rows, columns=["role", "layer", "head", "sentence_id"])
    df["score"] = rng.gamma(2.0, 1.6, len(df))
    df.loc[(df["role"] == "b") & (df["head"] == 1), "score"] = 4.25       # constant, above tau
    df.loc[(df["role"] == "b") & (df["head"] == 2), "score"] = 3.0        # constant, equal to tau
    df["score_upper"] = df["score"] + rng.random(len(df)) * 0.5
    roles = ["a", "b", "one", "none"]
    taus = {"a": 3.0, "b": 3.0, "one": 3.0, "none": 2.0}
    want = head_tests(df, heads, roles, taus, alpha=0.05, correction=correction, run=1)
    got = moment_tests(_moments_from_duckdb(df, roles), heads, roles, taus, alpha=0.05, correction=correction, run=1)
    assert list(got.columns) == RESULT_COLUMNS
    for c in ("run", "layer", "head", "role", "n", "tau", "significant", "flip_possible"):
        assert got[c].tolist() == want[c].tolist(), c
    for c in ("mean", "std", "t", "p", "p_adj", "ci_low", "ci_high"):
        np.testing.assert_allclose(got[c].astype(float), want[c].astype(float), rtol=1e-12, atol=0, equal_nan=True,
                                   err_msg=c)
    b = got[got["role"] == "b"].set_index("head")
    assert np.isinf(b.loc[1, "t"]).all() and (b.loc[1, "p"] == 0).all() and b.loc[1, "significant"].all()
    assert b.loc[2, "t"].isna().all() and b.loc[2, "p"].isna().all() and not b.loc[2, "significant"].any()
    assert (got.loc[got["role"] == "one", "n"] == 1).all() and got.loc[got["role"] == "one", "p"].isna().all()
    assert (got.loc[got["role"] == "none", "n"] == 0).all() and got.loc[got["role"] == "none", "mean"].isna().all()
    # and against scipy itself, head by head
    for (layer, head), row in got[got["role"] == "a"].set_index(["layer", "head"]).iterrows():
        s = df[(df["role"] == "a") & (df["layer"] == layer) & (df["head"] == head)]["score"]
        ref = stats.ttest_1samp(s, 3.0, alternative="greater")
        assert row["t"] == pytest.approx(ref.statistic, rel=1e-12) and row["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_moments_missing_for_a_head_or_with_unequal_counts_are_an_error():
    heads = [(0, 0), (0, 1)]
    moments = {"role": np.array([0, 0]), "layer": np.array([0, 0]), "head": np.array([0, 1]), "n": np.array([5, 5]),
               **{c: np.array([3.5, 3.6]) for c in ("mean", "var", "mean_upper", "var_upper")},
               **{c: np.array([3.0, 3.1]) for c in ("min", "mean_upper", "min_upper")},
               **{c: np.array([4.0, 4.1]) for c in ("max", "max_upper")}}
    assert moment_tests(moments, heads, ["r"], 3.0)["n"].tolist() == [5, 5]
    for broken in ({**moments, "n": np.array([5, 4])},
                   {c: v[:1] for c, v in moments.items()},
                   {**moments, "head": np.array([0, 0])}):
        with pytest.raises(ValueError, match="role r: scores missing"):
            moment_tests(broken, heads, ["r"], 3.0)


def test_scores_all_equal_are_taken_exactly_in_both_paths():
    """Equal scores have no spread: the mean is their value, std 0, and the test is decided by
    the value alone (t = +inf, p = 0 above tau; -inf, p = 1 below; no test at tau), from the scores
    and from DuckDB's moments alike. A float mean of equal values missed them by a last bit:
    seven scores of 0.7 against tau 0.7 gave t = 2.45, p = 0.025 (significant, as scipy's
    ttest_1samp gives with a precision-loss warning), three of 0.1 gave t = inf, p = 0 from favg."""
    heads = [(0, 0), (0, 1), (0, 2)]
    values = {"sevens": {(0, 0): [0.7] * 7, (0, 1): [0.7] * 7, (0, 2): [0.7] * 7},
              "tenths": {(0, 0): [0.1] * 3, (0, 1): [0.1] * 3, (0, 2): [0.1] * 3}}
    df = pd.concat([_frame(v, role=role) for role, v in values.items()], ignore_index=True)
    roles = ["sevens", "tenths"]
    for taus, want_t, want_p in (({"sevens": 0.7, "tenths": 0.1}, np.nan, np.nan),
                                 ({"sevens": 0.6, "tenths": 0.05}, np.inf, 0.0),
                                 ({"sevens": 0.8, "tenths": 0.2}, -np.inf, 1.0)):
        for res in (head_tests(df, heads, roles, taus, correction="none"),
                    moment_tests(_moments_from_duckdb(df, roles), heads, roles, taus, correction="none")):
            for role, c in (("sevens", 0.7), ("tenths", 0.1)):
                r = res[res["role"] == role]
                assert (r["mean"] == c).all() and (r["std"] == 0).all(), (role, taus)
                np.testing.assert_array_equal(r["t"], want_t, err_msg=f"{role} {taus}")
                np.testing.assert_array_equal(r["p"], want_p, err_msg=f"{role} {taus}")
                assert r["significant"].tolist() == [want_p == 0.0] * 3, (role, taus)
                assert (r["ci_low"] == c).all() and (r["ci_high"] == c).all()  # no spread: the value itself
                if want_p != want_p:  # untested: outside the family
                    assert r["p_adj"].isna().all()


def test_a_tau_beyond_every_score_gives_t_minus_infinity_without_a_warning():
    """--tau 1e308 (finite, so accepted): (mean - tau) / se overflows to -inf, p = 1; numpy's
    overflow warning was printed to the user's terminal."""
    import warnings

    df = _frame({(0, 0): [3.5, 4.1, 2.9, 5.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for res in (head_tests(df, [(0, 0)], ["r"], 1e308),
                    moment_tests(_moments_from_duckdb(df, ["r"]), [(0, 0)], ["r"], 1e308)):
            assert res["t"].tolist() == [-np.inf] and res["p"].tolist() == [1.0] and not res["significant"][0]


@pytest.mark.parametrize("alpha", [1e-10, 1e-17, 1e-300])
def test_the_interval_is_finite_and_exact_at_any_alpha(alpha):
    """The interval's t(1 - alpha/2, n - 1) from the upper tail: 1 - alpha/2 rounds to 1.0 below
    alpha 2e-16, which gave t = inf (an interval from -inf to inf at --alpha 1e-300, and NaN for
    scores all equal), and lost digits above it (1e-9 relative at alpha 1e-10)."""
    s = [3.5, 4.1, 2.9, 5.0, 3.8]
    df = pd.concat([_frame({(0, 0): s}), _frame({(0, 0): [4.0] * 5}, role="c")])
    for res in (head_tests(df, [(0, 0)], ["r", "c"], 3.0, alpha=alpha),
                moment_tests(_moments_from_duckdb(df, ["r", "c"]), [(0, 0)], ["r", "c"], 3.0, alpha=alpha)):
        r = res.set_index("role")
        q = stats.t.isf(alpha / 2, 4)  # scipy's upper-tail quantile, finite
        assert np.isfinite(q)
        half = q * np.std(s, ddof=1) / np.sqrt(5)
        assert r.loc["r", "ci_low"] == pytest.approx(np.mean(s) - half, rel=1e-12)
        assert r.loc["r", "ci_high"] == pytest.approx(np.mean(s) + half, rel=1e-12)
        assert (r.loc["c", "ci_low"], r.loc["c", "ci_high"]) == (4.0, 4.0)


def test_a_p_value_equal_to_alpha_is_not_significant():
    """SCORES.md: a head has the role when its adjusted p-value is *below* alpha."""
    s = [3.5, 4.1, 2.9, 5.0, 3.8]
    p = stats.ttest_1samp(s, 3.0, alternative="greater").pvalue
    df = _frame({(0, 0): s})
    at = head_tests(df, [(0, 0)], ["r"], 3.0, alpha=p, correction="none").iloc[0]
    assert at["p_adj"] == p and not at["significant"]
    above = head_tests(df, [(0, 0)], ["r"], 3.0, alpha=float(np.nextafter(p, 1)), correction="none").iloc[0]
    assert above["significant"]


def test_untested_heads_cannot_flip():
    """A head with fewer than two scores is untested on the scores and on the upper bounds alike,
    so neither decision is 'significant' and there is nothing to flip."""
    df = pd.concat([_frame({(0, 0): [5.0], (0, 1): [6.0]}, role="one", upper_shift=1.0),
                    _frame({(0, 0): [5.0, 6.0, 5.5], (0, 1): [1.0, 1.2, 0.9]}, role="r", upper_shift=1.0)])
    res = head_tests(df, [(0, 0), (0, 1)], ["one", "r", "empty"], 3.0, correction="none")
    untested = res[res["p"].isna()]
    assert len(untested) == 4 and not untested["flip_possible"].any()


@pytest.mark.parametrize("correction", ["bonferroni", "holm", "bh"])
def test_flip_possible_corrects_the_upper_bounds_tests_as_the_family(correction):
    """flip_possible compares the decision on the scores with the decision of the same tests and
    the same correction on the upper bounds: two heads whose upper-bound p-values are each below
    alpha, but not once corrected over the family of three, cannot flip."""
    alpha, shift = 0.05, 0.28
    near = [2.6, 3.4, 2.9, 3.3, 3.0]
    vals = {(0, 0): near, (0, 1): near, (0, 2): [1.0, 1.2, 0.9, 1.1, 1.0]}
    p = stats.ttest_1samp(near, 3.0, alternative="greater").pvalue
    p_up = stats.ttest_1samp(np.add(near, shift), 3.0, alternative="greater").pvalue
    # the premise: not significant on the scores; the upper p below alpha, but not 3/2 of it
    # (BH's adjustment of the second of three), let alone 2 or 3 times it (holm, bonferroni)
    assert p > alpha and p_up < alpha < 1.5 * p_up
    df = _frame(vals, upper_shift=shift)
    res = head_tests(df, list(vals), ["r"], 3.0, alpha=alpha, correction=correction)
    assert not res["significant"].any() and not res["flip_possible"].any()
    uncorrected = head_tests(df, list(vals), ["r"], 3.0, alpha=alpha, correction="none")
    assert uncorrected["flip_possible"].tolist() == [True, True, False]  # the correction decides


@pytest.mark.parametrize("alpha", [0, 1, 1.0, -0.1])
def test_alpha_outside_the_open_interval_is_refused_as_input(alpha):
    from headdb.errors import InputError
    from headdb.stats import check_options

    with pytest.raises(InputError, match=f"alpha must be between 0 and 1, not {alpha!r}"):
        check_options(alpha, "bh")


@pytest.mark.parametrize("correction", ["holm", "bonferroni", "bh", "none"])
def test_head_tests_apply_the_chosen_correction_over_the_family(correction):
    """p_adj of head_tests is the chosen correction of scipy's p-values over every test of the
    family, computed here by hand (holm: step-down m - rank + 1, made monotone)."""
    vals = {(0, 0): [3.5, 4.1, 2.9, 5.0, 3.8], (0, 1): [3.1, 3.3, 2.8, 3.6, 3.2],
            (1, 0): [3.0, 3.9, 3.4, 3.7, 3.3], (1, 1): [2.0, 2.5, 2.2, 2.9, 2.4]}
    p = np.array([stats.ttest_1samp(v, 3.0, alternative="greater").pvalue for v in vals.values()])
    m, order = len(p), np.argsort(p)
    if correction == "holm":
        want = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            want[i] = running
        assert not np.allclose(want, np.minimum(1.0, m * p))  # holm is not bonferroni on these
    elif correction == "bonferroni":
        want = np.minimum(1.0, m * p)
    elif correction == "bh":
        want = stats.false_discovery_control(p, method="bh")
    else:
        want = p
    res = head_tests(_frame(vals), list(vals), ["r"], 3.0, correction=correction)
    np.testing.assert_allclose(res["p_adj"].to_numpy(), want, rtol=1e-12)
