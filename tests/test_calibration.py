"""Calibration: attention without structure must not be classified more often than alpha says.

Rows are flat-Dirichlet draws, so E[A_ij] = 1/L for every key and E[score] = 1 for every role:
with tau = 1 every head is exactly on the null's boundary. Heads are independent (each layer
has its own seed), so per role the number of significant heads without correction is at most
Binomial(H, alpha). The tolerance is that binomial's 1 - 1e-6 quantile (a calibrated test
fails it with probability below 1e-6 per role), and it is tight enough that a test running at
twice the nominal level would pass it with probability below 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import headdb
from headdb.stats import head_tests
from role_reference import build_store, simple_seq

ALPHA = 0.05
N_LAYERS, N_HEADS, N_SENTENCES = 40, 60, 16
SHAPES = [
    simple_seq([1, 2, 1, 1, 1], [1, None, 3, 1, 1], ["nsubj", "root", "amod", "obj", "advmod"]),
    simple_seq([2, 1, 1, 2], [1, None, 1, 1], ["nsubj", "root", "obj", "advmod"]),
    simple_seq([1, 1, 1, 1, 1, 1], [1, None, 3, 1, 1, 4], ["amod", "root", "amod", "obj", "nsubj", "advmod"]),
]


@pytest.fixture(scope="module")
def null_store(tmp_path_factory):
    seqs = [SHAPES[s % len(SHAPES)] for s in range(N_SENTENCES)]
    per_layer = []
    for layer in range(N_LAYERS):  # one seed per layer: layers are independent replicates
        rng = np.random.default_rng(10_000 + layer)
        per_layer.append([rng.dirichlet(np.ones(q.length), size=(N_HEADS, q.length)).astype(np.float32)
                          for q in seqs])
    attention = [np.stack([per_layer[layer][s] for layer in range(N_LAYERS)]) for s in range(N_SENTENCES)]
    db = tmp_path_factory.mktemp("null") / "null.db"
    build_store(db, seqs, attention)
    return db


def test_share_significant_without_correction_at_most_alpha(null_store):
    res = headdb.classify(null_store, tau=1.0, alpha=ALPHA, correction="none", store=False)
    n_heads = N_LAYERS * N_HEADS
    roles = [r for r in res["role"].unique() if (res.loc[res["role"] == r, "n"] >= 2).all()]
    assert len(roles) == 9  # every built-in but block (single inputs)
    bound = stats.binom.ppf(1 - 1e-6 / len(roles), n_heads, ALPHA)
    assert stats.binom.cdf(bound, n_heads, 2 * ALPHA) < 1e-3  # the tolerance cannot hide a 2x error
    for role in roles:
        sig = int(res.loc[res["role"] == role, "significant"].sum())
        assert sig <= bound, f"{role}: {sig} of {n_heads} heads significant (bound {bound:.0f})"
    share = res.loc[res["role"].isin(roles), "significant"].mean()
    assert share <= ALPHA + 0.01, share
    # not vacuous: the same data are detected against a lower threshold
    low = headdb.classify(null_store, roles="local,delimiter_cls", tau=0.8, correction="none", store=False)
    assert low["significant"].mean() > 0.9


def test_familywise_error_with_bonferroni_at_most_alpha(null_store):
    scores = headdb.scores(null_store)
    roles = list(dict.fromkeys(scores["role"]))
    failures = 0
    for layer in range(N_LAYERS):  # each layer is a replicate with its own seed: one family each
        sub = scores[scores["layer"] == layer]
        heads = [(layer, h) for h in range(N_HEADS)]
        res = head_tests(sub, heads, roles, 1.0, ALPHA, "bonferroni")
        failures += bool(res["significant"].any())
    bound = stats.binom.ppf(1 - 1e-6, N_LAYERS, ALPHA)
    assert failures <= bound, f"{failures} of {N_LAYERS} families had a false positive (bound {bound:.0f})"
    # without correction nearly every family has a false positive: the check has teeth
    loose = sum(bool(head_tests(scores[scores["layer"] == layer], [(layer, h) for h in range(N_HEADS)], roles,
                                1.0, ALPHA, "none")["significant"].any()) for layer in range(N_LAYERS))
    assert loose > bound
