"""Sparsification invariants (hypothesis): what `sentence_edges` keeps of ranked attention rows."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headdb.db import migrate
from headdb.sparsify import Sparsity, keep_mask, sentence_edges, topk_rows

EPS = 1e-6


def attention(rng: np.random.Generator, layers: int, heads: int, length: int, width: int,
              temperature: float, ties: bool) -> np.ndarray:
    """Rows of a padded batch as an eager encoder returns them: softmax over the first
    ``length`` keys, exact zeros on padding keys, garbage rows for padding queries."""
    logits = rng.normal(size=(layers, heads, width, width)) * temperature
    if ties:
        logits = np.round(logits)  # many equal weights in a row
    logits[..., length:] = -np.inf
    a = np.exp(logits - logits.max(axis=-1, keepdims=True))
    a = (a / a.sum(axis=-1, keepdims=True)).astype(np.float32)
    a[:, :, length:, :] = rng.random(size=a[:, :, length:, :].shape)  # padding queries are never read
    return a


cases = st.fixed_dictionaries({
    "layers": st.integers(1, 3), "heads": st.integers(1, 3), "length": st.integers(1, 12),
    "pad": st.integers(0, 4), "k": st.one_of(st.none(), st.integers(1, 16)),
    "min_mass": st.one_of(st.none(), st.floats(0.01, 1.0)), "temperature": st.floats(0.0, 6.0),
    "ties": st.booleans(), "seed": st.integers(0, 2**32 - 1),
})


def run_case(c):
    rng = np.random.default_rng(c["seed"])
    width = c["length"] + c["pad"]
    att = attention(rng, c["layers"], c["heads"], c["length"], width, c["temperature"], c["ties"])
    values, indices = topk_rows(att, c["k"])
    edges = sentence_edges(values, indices.astype(np.int16), c["length"], c["min_mass"])
    return att, edges


def rows_of(edges):
    rows: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    for l, h, q, k, w in zip(edges.layer, edges.head, edges.query_pos, edges.key_pos, edges.weight):
        rows.setdefault((int(l), int(h), int(q)), []).append((int(k), float(w)))
    return rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_sparse_rows_invariants(c):
    att, edges = run_case(c)
    L, K, P = c["length"], c["k"], c["min_mass"]
    rows = rows_of(edges)
    # every real query row has at least one key; padding queries have none
    assert set(rows) == {(l, h, q) for l in range(c["layers"]) for h in range(c["heads"]) for q in range(L)}
    assert edges.layer.dtype == np.int16 and edges.key_pos.dtype == np.int16 and edges.weight.dtype == np.float32
    for (l, h, q), kept in rows.items():
        keys = [k for k, _ in kept]
        weights = np.array([w for _, w in kept], dtype=np.float64)
        assert len(keys) <= (L if K is None else min(K, L))
        assert len(set(keys)) == len(keys)
        assert all(0 <= k < L for k in keys)
        assert weights.sum() <= 1 + EPS
        # the weights are the row's own, largest first
        row = att[l, h, q, :L].astype(np.float64)
        assert np.array_equal(weights, row[keys])
        assert np.all(np.diff(weights) <= 0)
        # nothing left out weighs more than what was kept
        rest = np.delete(row, keys)
        if len(rest):
            assert rest.max() <= weights.min()
        cum = np.cumsum(weights)
        if P is None:
            assert len(keys) == (L if K is None else min(K, L))
        else:
            # cut semantics: every kept entry started below P (so the crossing entry is kept) ...
            assert np.all(cum[:-1] < P + 1e-12)
            # ... and the cut happened at the crossing entry, or at K / L
            if len(keys) < (L if K is None else min(K, L)):
                assert cum[-1] >= P - 1e-12


@settings(max_examples=100, deadline=None)
@given(cases)
def test_dense_keeps_every_key(c):
    c = dict(c, k=None, min_mass=None)
    att, edges = run_case(c)
    L = c["length"]
    n = c["layers"] * c["heads"] * L * L
    assert len(edges) == n
    dense = np.zeros((c["layers"], c["heads"], L, L), dtype=np.float32)
    dense[edges.layer, edges.head, edges.query_pos, edges.key_pos] = edges.weight
    assert np.array_equal(dense, att[:, :, :L, :L])
    assert np.allclose(dense.sum(axis=-1, dtype=np.float64), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def store():
    con = duckdb.connect(":memory:")
    migrate(con)
    yield con
    con.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases)
def test_residual_is_one_minus_kept_as_the_view_computes_it(store, c):
    att, edges = run_case(c)
    con = store
    con.execute("DELETE FROM edge_store")
    table = pa.table({"run_id": pa.array(np.ones(len(edges), np.int32)),
                      "sentence_id": pa.array(np.zeros(len(edges), np.int32)),
                      "layer": edges.layer, "head": edges.head, "query_pos": edges.query_pos,
                      "key_pos": edges.key_pos, "weight": edges.weight})
    con.register("batch", table)
    con.execute("INSERT INTO edge_store (run_id, sentence_id, layer, head, query_pos, key_pos, weight) "
                "SELECT * FROM batch")
    con.unregister("batch")
    view = {(l, h, q): (n, kept, res, mw) for l, h, q, n, kept, res, mw in con.execute(
        "SELECT layer, head, query_pos, n_kept, kept_mass, residual, min_weight FROM attention_rows").fetchall()}
    rows = rows_of(edges)
    assert set(view) == set(rows)
    for key, kept in rows.items():
        n, kept_mass, residual, min_weight = view[key]
        weights = np.array([w for _, w in kept], dtype=np.float32)
        total = float(weights.astype(np.float64).sum())
        assert n == len(kept)
        assert kept_mass == pytest.approx(total, abs=1e-12)
        assert residual == pytest.approx(max(0.0, 1.0 - total), abs=1e-12)
        assert residual >= 0.0
        assert kept_mass + residual >= 1.0 - 1e-12
        assert np.float32(min_weight) == weights.min()
        # the bound SCORES.md relies on: every unstored key weighs at most min_weight, all together residual
        l, h, q = key
        row = att[l, h, q, :c["length"]].astype(np.float64)
        unstored = np.delete(row, [k for k, _ in kept])
        assert unstored.sum() == pytest.approx(1.0 - total, abs=1e-5)
        if len(unstored):
            assert unstored.max() <= min_weight


def test_min_mass_cut_example():
    values = np.array([[[[0.5, 0.3, 0.15, 0.05]]]], dtype=np.float32)
    indices = np.array([[[[2, 0, 3, 1]]]], dtype=np.int16)
    # 0.5 < 0.7 keeps going; 0.8 crosses 0.7: that entry is kept, nothing after it
    assert keep_mask(values, indices, 4, 0.7).tolist() == [[[[True, True, False, False]]]]
    # reaching the mass exactly also stops after that entry
    assert keep_mask(values, indices, 4, 0.5).tolist() == [[[[True, False, False, False]]]]
    assert keep_mask(values, indices, 4, 1.0).tolist() == [[[[True, True, True, True]]]]
    assert keep_mask(values, indices, 4, None).all()
    # keys past the sequence (padding) are never kept
    assert keep_mask(values, indices, 3, None).tolist() == [[[[True, True, False, True]]]]
    assert keep_mask(values, indices, 3, 0.7).tolist() == [[[[True, True, False, False]]]]
    assert keep_mask(values, indices, 2, 0.99).tolist() == [[[[False, True, False, True]]]]
    e = sentence_edges(values, indices, 4, 0.7)
    assert e.key_pos.tolist() == [2, 0] and e.weight.tolist() == pytest.approx([0.5, 0.3])


def test_sparsity_settings():
    assert Sparsity(None, None).dense and not Sparsity(8, None).dense
    with pytest.raises(ValueError):
        Sparsity(0)
    with pytest.raises(ValueError):
        Sparsity(8, 0.0)
    with pytest.raises(ValueError):
        Sparsity(8, 1.5)


def test_a_min_mass_of_one_is_allowed():
    """min_mass lies in (0, 1]: 1.0 keeps a row until all of its mass is stored (README: --min-mass 0 and
    1.5 are refused, 1 is not)."""
    assert Sparsity(8, 1.0).min_mass == 1.0 and not Sparsity(8, 1.0).dense
    assert Sparsity(None, 1.0).min_mass == 1.0


def test_topk_rows_ranks_equal_weights_by_key_position():
    """The reference top-k orders ties as the ingest does: the lower key position first (a row
    long enough that an unstable sort reorders them)."""
    row = np.tile(np.array([0.25, 0.5, 0.25, 0.5], dtype=np.float32), 32) / 48  # 128 keys, two values
    values, order = topk_rows(row[None], 70)
    want = [k for k in range(128) if k % 2] + [k for k in range(128) if k % 2 == 0][:6]
    assert order[0].tolist() == want
    assert values[0].tolist() == row[want].tolist()
