"""Per-head hypothesis tests and multiple-testing corrections (pure functions; scipy only here).

For each (role, layer, head) the per-sentence scores s_1..s_n are tested with a one-sided
one-sample t-test, H1: E[s] > tau (``scipy.stats.ttest_1samp(s, tau, alternative="greater")``).
Every test of one classification is one family for the correction. A test is undefined
(p NULL, not significant, not part of the family) when n < 2, or when the scores have no
spread and their mean equals tau (scipy gives NaN there). Scores that are all equal are taken
exactly: mean that value, std 0, t = +-inf (p 0 or 1), or no test when the value is tau; scipy's
float mean of them can miss the value by a last bit (seven scores of 0.7: t = 2.45 against
tau 0.7, p = 0.025, and DuckDB's favg of three 0.1 gave t = inf), which decided a head on rounding.

The confidence interval is the two-sided (1 - alpha) Student-t interval of the mean,
mean +- t_{1-alpha/2, n-1} * std / sqrt(n), with the sample std (ddof = 1).

``flip_possible``: the same tests and correction run on the per-sentence upper bounds
(score_upper) reach a different decision than on the scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

CORRECTIONS = ("bh", "holm", "bonferroni", "none")
RESULT_COLUMNS = ["run", "layer", "head", "role", "n", "mean", "std", "tau", "t", "p", "p_adj",
                  "significant", "ci_low", "ci_high", "flip_possible"]


def check_options(alpha: float, correction: str, tau: float | None = None) -> None:
    """The options of a family of tests (classify's, compare's), each refused with its value."""
    import math
    import numbers

    from headdb.errors import InputError, option

    def number(value) -> bool:  # numpy's too (np.float32 is no float); not True or '3'
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))

    if correction not in CORRECTIONS:
        raise InputError(f"{option('correction')} must be one of {', '.join(CORRECTIONS)}, not {correction!r}")
    if not (number(alpha) and 0 < alpha < 1):
        raise InputError(f"{option('alpha')} must be between 0 and 1, not {alpha!r}")
    if tau is not None and not (number(tau) and math.isfinite(tau)):
        raise InputError(f"{option('tau')} must be a finite number, not {tau!r}")


def _bh(q: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, the steps of ``scipy.stats.false_discovery_control``
    (method 'bh'): sort, scale by m / rank, running minimum from the largest, clip to [0, 1]."""
    m = q.size
    if m <= 1:
        return q.copy()
    order = np.argsort(q)
    ps = q[order] * (m / np.arange(1, m + 1, dtype=float))
    np.minimum.accumulate(ps[::-1], out=ps[::-1])
    out = np.empty(m)
    out[order] = ps
    return np.clip(out, 0.0, 1.0)


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values over one family; NaN entries stay NaN and are not in the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    if method == "none":
        adj = q
    elif method == "bonferroni":
        adj = np.minimum(1.0, q * m)
    elif method == "bh":
        adj = _bh(q)
    else:  # holm: step-down, monotone
        order = np.argsort(q, kind="mergesort")
        stepped = np.minimum(1.0, (m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.maximum.accumulate(stepped)
    out[ok] = adj
    return out


def _one_role(values: np.ndarray, tau: float, alpha: float) -> dict[str, np.ndarray]:
    """Tests of many heads over the same sentences: ``values`` is [heads, sentences].

    The arithmetic of ``scipy.stats.ttest_1samp(values, tau, axis=1, alternative="greater")``
    step for step (mean, variance as the mean squared deviation times n / (n - 1), t, and the
    p-value from the Student t survival function ``scipy.special.stdtr``), which gives the same
    numbers bit for bit (tests/test_stats.py) and imports in a fifth of the time of scipy.stats
    (0.08 s against 0.39 s here), which every `headdb classify` would otherwise pay.
    """
    n = values.shape[1]
    h = values.shape[0]
    mean = values.mean(axis=1) if n else np.full(h, np.nan)
    if n < 2:
        return _t_tests(np.full(h, n), mean, np.full(h, np.nan), np.full(h, np.nan), tau, alpha)
    std = values.std(axis=1, ddof=1)
    var = ((values - values.mean(axis=1, keepdims=True)) ** 2).mean(axis=1) * (n / (n - 1))
    mean, std, var = _exact_if_constant(values.min(axis=1), values.max(axis=1), mean, std, var)
    return _t_tests(np.full(h, n), mean, std, var, tau, alpha)


def _exact_if_constant(low: np.ndarray, high: np.ndarray, mean: np.ndarray, std: np.ndarray,
                       var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads whose scores are all equal (min = max) get that value as their mean and no spread,
    exactly: a float mean of equal values can differ from them in the last bit (and the variance
    be a rounding residue), which made t finite or infinite where the scores equal tau."""
    same = low == high
    return np.where(same, low, mean), np.where(same, 0.0, std), np.where(same, 0.0, var)


def _t_tests(n: np.ndarray, mean: np.ndarray, std: np.ndarray, var: np.ndarray, tau: float,
             alpha: float) -> dict[str, np.ndarray]:
    """The one-sided t-tests of heads with ``n`` scores of mean ``mean``, sample standard
    deviation ``std`` and sample variance ``var`` (ddof = 1): t, p and the interval, as
    ``scipy.stats.ttest_1samp`` computes them from those moments. Heads with n < 2 are untested
    (std, t, p and the interval NaN)."""
    from scipy import special

    n = np.asarray(n, dtype=np.int64)
    small = n < 2
    dof = np.where(small, 1, n - 1)
    # near-constant scores (a head that always does the same) are valid samples: 0/0 there is
    # expected (t and p NaN when the mean equals tau), not an error
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # over: a tau of 1e308
        t = (mean - tau) / np.sqrt(var / n)
    p = special.stdtr(dof, -t)
    # t(1 - alpha/2) as the upper tail's quantile: 1 - alpha/2 is 1.0 in floats below alpha 2e-16
    # (an infinite interval at --alpha 1e-300, where it is 172 standard errors at n = 300)
    half = -special.stdtrit(dof, alpha / 2) * std / np.sqrt(n)
    nan = np.where(small, np.nan, 0.0)  # NaN where untested, else adds nothing
    return {"n": n, "mean": mean, "std": std + nan, "t": t + nan, "p": p + nan,
            "ci_low": mean - half + nan, "ci_high": mean + half + nan}


def _codes(column: pd.Series, names: list[str]) -> np.ndarray:
    """The position of each row's role in ``names`` (-1 for a role not in it)."""
    index = pd.Index(names)
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        by_category = index.get_indexer(column.cat.categories)
        return np.where(codes >= 0, by_category[codes], -1)
    return index.get_indexer(column)


def _layout(sub: dict[str, np.ndarray], heads: list[tuple[int, int]], head_pos: np.ndarray, role: str):
    """A function that puts one role's score column into a [heads, sentences] matrix.

    Every head of a role has the same sentences (the sieve does not depend on the head);
    anything else is a bug upstream and raises. Scores sorted by layer, head, sentence_id in the
    order of ``heads`` (as classify computes them) are a reshape; any other order is scattered.
    """
    sid = sub["sentence_id"]
    layer, head = sub["layer"].astype(np.int64), sub["head"].astype(np.int64)
    n_l, n_h = head_pos.shape
    inside = (layer < n_l) & (head < n_h) & (layer >= 0) & (head >= 0)
    rows = np.full(len(sid), -1)
    rows[inside] = head_pos[layer[inside], head[inside]]
    n_heads = len(heads)
    if len(sid) % n_heads == 0:
        n_s = len(sid) // n_heads
        first = sid[:n_s]
        if ((np.diff(first) > 0).all() and (rows == np.repeat(np.arange(n_heads), n_s)).all()
                and (sid.reshape(n_heads, n_s) == first).all()):
            return lambda column: column.reshape(n_heads, n_s)
    sentences, col = np.unique(sid, return_inverse=True)
    keep = rows >= 0

    def scatter(column: np.ndarray) -> np.ndarray:
        values = np.full((n_heads, len(sentences)), np.nan)
        values[rows[keep], col[keep]] = column[keep]
        if np.isnan(values).any():
            raise ValueError(f"role {role}: scores missing for some heads or sentences")
        return values

    return scatter


def head_tests(scores: pd.DataFrame, heads: list[tuple[int, int]], roles: list[str],
               tau: Mapping[str, float] | float, alpha: float = 0.05, correction: str = "bh",
               run: int | None = None) -> pd.DataFrame:
    """One test per (role, head) over per-sentence scores, corrected over the whole family.

    ``scores`` has columns role, layer, head, sentence_id, score, score_upper; ``heads`` lists
    every (layer, head) to test and ``roles`` every role (a role without samples gets n = 0).
    Returns :data:`RESULT_COLUMNS`, roles in the given order, then layer, head.
    """
    # one role's rows: slices when the scores come sorted by role (as classify's do), else a mask
    n_rows = len(scores)
    if n_rows:
        code_of = {r: i for i, r in enumerate(dict.fromkeys(roles))}
        role_codes = _codes(scores["role"], list(code_of))
        ordered = bool((np.diff(role_codes) >= 0).all())
        columns = {c: scores[c].to_numpy() for c in ("layer", "head", "sentence_id", "score", "score_upper")}

    def rows_of(role: str) -> dict[str, np.ndarray] | None:
        if not n_rows:
            return None
        if ordered:
            picked = slice(*np.searchsorted(role_codes, [code_of[role], code_of[role] + 1]))
        else:
            picked = np.flatnonzero(role_codes == code_of[role])
        return {c: v[picked] for c, v in columns.items()}

    return role_tests(rows_of, heads, roles, tau, alpha, correction, run)


def _check_family(heads: list[tuple[int, int]], roles: list[str], tau: Mapping[str, float] | float, alpha: float,
                  correction: str) -> tuple[dict[str, float], np.ndarray]:
    """Validate a family's options; each role's tau and the [layer, head] -> position table."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
    taus = {r: float(tau[r] if isinstance(tau, Mapping) else tau) for r in roles}
    n_l = max((h[0] for h in heads), default=0) + 1
    n_h = max((h[1] for h in heads), default=0) + 1
    head_pos = np.full((n_l, n_h), -1)
    for i, (layer, head) in enumerate(heads):
        head_pos[layer, head] = i
    return taus, head_pos


def _role_part(heads: list[tuple[int, int]], role: str, tau: float, tested: dict[str, np.ndarray],
               tested_upper: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({"layer": [h[0] for h in heads], "head": [h[1] for h in heads], "role": role,
                         **tested, "tau": tau, "_p_upper": tested_upper["p"]})


def _family(parts: list[pd.DataFrame], alpha: float, correction: str, run: int | None) -> pd.DataFrame:
    """One family of tests: the correction over all of them, the decisions, flip_possible."""
    out = pd.concat(parts, ignore_index=True)
    out["p_adj"] = adjust(out["p"].to_numpy(), correction)
    out["significant"] = np.nan_to_num(out["p_adj"].to_numpy(), nan=1.0) < alpha
    upper_adj = adjust(out["_p_upper"].to_numpy(), correction)
    out["flip_possible"] = (np.nan_to_num(upper_adj, nan=1.0) < alpha) != out["significant"].to_numpy()
    out["run"] = run
    out["n"] = out["n"].astype("int64")
    return out[RESULT_COLUMNS]


def role_tests(rows_of: Callable[[str], dict[str, np.ndarray] | None], heads: list[tuple[int, int]],
               roles: list[str], tau: Mapping[str, float] | float, alpha: float = 0.05, correction: str = "bh",
               run: int | None = None) -> pd.DataFrame:
    """:func:`head_tests` with one role's scores at a time: ``rows_of(role)`` gives its columns
    layer, head, sentence_id, score, score_upper as numpy arrays (or None for no rows), so that
    only one role's scores are in memory at once."""
    taus, head_pos = _check_family(heads, roles, tau, alpha, correction)
    parts = []
    for role in roles:
        sub = rows_of(role)
        place = _layout(sub, heads, head_pos, role) if sub is not None and len(sub["score"]) else None
        blocks = {}
        for column in ("score", "score_upper"):
            if place is None:
                values = np.empty((len(heads), 0))
            else:
                values = place(np.asarray(sub[column], dtype=float))
            blocks[column] = _one_role(values, taus[role], alpha)
        parts.append(_role_part(heads, role, taus[role], blocks["score"], blocks["score_upper"]))
    return _family(parts, alpha, correction, run)


#: The columns :func:`moment_tests` takes, per (role, layer, head): the number of scores, their
#: mean, sample variance (ddof = 1), minimum and maximum, and the same of the upper bounds.
MOMENT_COLUMNS = ("role", "layer", "head", "n", "mean", "var", "min", "max", "mean_upper", "var_upper",
                  "min_upper", "max_upper")


def moment_tests(moments: Mapping[str, np.ndarray], heads: list[tuple[int, int]], roles: list[str],
                 tau: Mapping[str, float] | float, alpha: float = 0.05, correction: str = "bh",
                 run: int | None = None) -> pd.DataFrame:
    """:func:`head_tests` from each head's moments instead of its scores: ``moments`` has the
    numpy columns :data:`MOMENT_COLUMNS`, one row per (role, layer, head) that has scores (role
    as its position in ``roles``), in any order. The t-test needs nothing else, so classify
    computes the moments where the scores are stored (DuckDB's ``favg`` and ``var_samp``) and
    never reads the scores back. The numbers equal scipy's from the scores to float rounding
    (the sums are added in another order), not bit for bit as :func:`head_tests`'."""
    taus, head_pos = _check_family(heads, roles, tau, alpha, correction)
    role_of = np.asarray(moments["role"], dtype=np.int64)
    layer, head = np.asarray(moments["layer"], dtype=np.int64), np.asarray(moments["head"], dtype=np.int64)
    n_l, n_h = head_pos.shape
    inside = (layer >= 0) & (layer < n_l) & (head >= 0) & (head < n_h)
    rows = np.full(len(role_of), -1)
    rows[inside] = head_pos[layer[inside], head[inside]]
    parts = []
    for k, role in enumerate(roles):
        picked = np.flatnonzero((role_of == k) & (rows >= 0))
        n = np.zeros(len(heads), dtype=np.int64)
        columns = {c: np.full(len(heads), np.nan) for c in MOMENT_COLUMNS[4:]}
        if len(picked):
            # every head of a role has the same sentences (the sieve does not depend on the head)
            got = np.asarray(moments["n"], dtype=np.int64)[picked]
            if len(picked) != len(heads) or len(np.unique(rows[picked])) != len(heads) or (got != got[0]).any():
                raise ValueError(f"role {role}: scores missing for some heads or sentences")
            n[rows[picked]] = got
            for c in columns:  # NULL (a variance of one score) as NaN, also from DuckDB's masked arrays
                columns[c][rows[picked]] = np.ma.asarray(moments[c], dtype=float).filled(np.nan)[picked]
        tested = {}
        for suffix in ("", "_upper"):
            mean, std, var = _exact_if_constant(columns["min" + suffix], columns["max" + suffix],
                                                columns["mean" + suffix], np.sqrt(columns["var" + suffix]),
                                                columns["var" + suffix])
            tested[suffix] = _t_tests(n, mean, std, var, taus[role], alpha)
        parts.append(_role_part(heads, role, taus[role], tested[""], tested["_upper"]))
    return _family(parts, alpha, correction, run)
