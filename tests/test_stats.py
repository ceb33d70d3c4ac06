"""The per-head tests and corrections against scipy and hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headdb.stats import RESULT_COLUMNS, adjust, head_tests


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
