"""Per-head hypothesis tests and multiple-testing corrections (pure functions; scipy only here).

For each (role, layer, head) the per-sentence scores s_1..s_n are tested with a one-sided
one-sample t-test, H1: E[s] > tau (``scipy.stats.ttest_1samp(s, tau, alternative="greater")``).
Every test of one classification is one family for the correction. A test is undefined
(p NULL, not significant, not part of the family) when n < 2, or when the scores have no
spread and their mean equals tau (scipy gives NaN there).

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
    from scipy import special

    n = values.shape[1]
    h = values.shape[0]
    mean = values.mean(axis=1) if n else np.full(h, np.nan)
    if n < 2:
        nan = np.full(h, np.nan)
        return {"n": np.full(h, n), "mean": mean, "std": nan, "t": nan, "p": nan, "ci_low": nan, "ci_high": nan}
    std = values.std(axis=1, ddof=1)
    # near-constant scores (a head that always does the same) are valid samples: 0/0 there is
    # expected (t and p NaN when the mean equals tau), not an error
    with np.errstate(divide="ignore", invalid="ignore"):
        var = ((values - values.mean(axis=1, keepdims=True)) ** 2).mean(axis=1) * (n / (n - 1))
        t = (mean - tau) / np.sqrt(var / n)
    p = special.stdtr(n - 1, -t)
    half = special.stdtrit(n - 1, 1 - alpha / 2) * std / np.sqrt(n)
    return {"n": np.full(h, n), "mean": mean, "std": std, "t": t, "p": p,
            "ci_low": mean - half, "ci_high": mean + half}


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


def role_tests(rows_of: Callable[[str], dict[str, np.ndarray] | None], heads: list[tuple[int, int]],
               roles: list[str], tau: Mapping[str, float] | float, alpha: float = 0.05, correction: str = "bh",
               run: int | None = None) -> pd.DataFrame:
    """:func:`head_tests` with one role's scores at a time: ``rows_of(role)`` gives its columns
    layer, head, sentence_id, score, score_upper as numpy arrays (or None for no rows), so that
    only one role's scores are in memory at once."""
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
        parts.append(pd.DataFrame({"layer": [h[0] for h in heads], "head": [h[1] for h in heads], "role": role,
                                   **blocks["score"], "tau": taus[role], "_p_upper": blocks["score_upper"]["p"]}))
    out = pd.concat(parts, ignore_index=True)
    out["p_adj"] = adjust(out["p"].to_numpy(), correction)
    out["significant"] = np.nan_to_num(out["p_adj"].to_numpy(), nan=1.0) < alpha
    upper_adj = adjust(out["_p_upper"].to_numpy(), correction)
    out["flip_possible"] = (np.nan_to_num(upper_adj, nan=1.0) < alpha) != out["significant"].to_numpy()
    out["run"] = run
    out["n"] = out["n"].astype("int64")
    return out[RESULT_COLUMNS]
