"""Sieve bias scores on synthetic stores with known answers (no model)."""

from __future__ import annotations

import numpy as np
import pytest

import headdb
from role_reference import (BUILTIN, build_store, dirichlet_attention, sentence_score, sieves, simple_seq,
                            sparse_sentence_bounds)

# two single inputs with multi-piece words and each relation; heads are word indices
SINGLE = [
    simple_seq([1, 2, 1, 3, 1], [1, None, 3, 1, 1], ["nsubj", "root", "amod", "obj", "advmod:emph"]),
    simple_seq([2, 1, 1], [1, None, 1], ["nsubj:pass", "root", "dobj"]),
    simple_seq([1], [None], ["root"]),  # no syntactic query at all
]
PAIRS = [
    simple_seq([1, 2], [1, None], ["amod", "root"], [2, 1, 1], [None, 0, 0], ["root", "obj", "obl:tmod"]),
    simple_seq([3], [None], ["root"], [1, 1], [1, None], ["nsubj", "root"]),
]


def _attention(seqs, n_layers, n_heads, fill):
    return [np.stack([np.stack([fill(q, layer, head) for head in range(n_heads)]) for layer in range(n_layers)])
            for q in seqs]


def _by_key(df):
    return {(r.role, r.layer, r.head, r.sentence_id): r for r in df.itertuples(index=False)}


@pytest.mark.parametrize("seqs,pairs", [(SINGLE, False), (PAIRS, True)], ids=["single", "pairs"])
def test_uniform_rows_score_one_for_every_role(tmp_path, seqs, pairs):
    db = tmp_path / "u.db"
    att = _attention(seqs, 2, 3, lambda q, l, h: np.full((q.length, q.length), 1.0 / q.length))
    build_store(db, seqs, att, pairs=pairs)
    df = headdb.scores(db)
    assert set(df["role"]) == {r for r in BUILTIN if any(sieves(q, pairs)[r] for q in seqs)}
    assert ("block" in set(df["role"])) == pairs
    np.testing.assert_allclose(df["score"], 1.0, atol=1e-6)
    np.testing.assert_allclose(df["score_upper"], 1.0, atol=1e-5)
    # every role samples exactly the sentences the reference says take part
    for role in BUILTIN:
        expected = {s for s, q in enumerate(seqs) if sieves(q, pairs)[role]}
        assert set(df.loc[df["role"] == role, "sentence_id"]) == expected, role


@pytest.mark.parametrize("role", BUILTIN)
def test_all_mass_on_the_sieve_gives_L_over_size(tmp_path, role):
    pairs = role == "block"
    seqs = PAIRS if pairs else SINGLE
    def fill(q, layer, head):
        A = np.full((q.length, q.length), 1.0 / q.length)
        for i, S in sieves(q, pairs)[role].items():
            A[i] = 0.0
            A[i, sorted(S)] = 1.0 / len(S)
        return A
    db = tmp_path / "s.db"
    build_store(db, seqs, _attention(seqs, 1, 2, fill), pairs=pairs)
    got = _by_key(headdb.scores(db, roles=[role]))
    for sid, q in enumerate(seqs):
        sv = sieves(q, pairs)[role]
        if not sv:
            assert (role, 0, 0, sid) not in got
            continue
        expected = np.mean([q.length / len(S) for S in sv.values()])
        for head in range(2):
            row = got[(role, 0, head, sid)]
            assert row.score == pytest.approx(expected, rel=1e-6)
            assert row.n_queries == len(sv)
            assert row.score_upper == pytest.approx(expected, rel=1e-5)
    if role == "delimiter_cls":  # |S| = 1: the score is L
        assert got[(role, 0, 0, 0)].score == pytest.approx(SINGLE[0].length, rel=1e-6)



def test_blocks_ceiling_is_2L_over_the_pieces_whatever_the_segments_lengths(tmp_path):
    """All of every row on its own segment gives each pair 2L / P (P its pieces), balanced or not:
    the README said the ceiling L / |own segment| was "about 2 for segments of similar length",
    as if unequal segments raised it towards tau 3."""
    seqs = [simple_seq([1] * n_a, [None] + [0] * (n_a - 1), ["root"] + ["dep"] * (n_a - 1),
                       [1] * n_b, [None] + [0] * (n_b - 1), ["root"] + ["dep"] * (n_b - 1))
            for n_a, n_b in ((3, 3), (1, 17), (12, 2), (4, 3), (1, 1))]

    def fill(q, layer, head):
        A = np.full((q.length, q.length), 1.0 / q.length)
        for i, S in sieves(q, True)["block"].items():
            A[i] = 0.0
            A[i, sorted(S)] = 1.0 / len(S)
        return A

    db = tmp_path / "b.db"
    build_store(db, seqs, _attention(seqs, 1, 1, fill), pairs=True)
    got = headdb.scores(db, roles=["block"]).set_index("sentence_id")["score"]
    for sid, q in enumerate(seqs):
        pieces = sum(s is None for s in q.special)
        assert pieces == q.length - 3
        assert got[sid] == pytest.approx(2 * q.length / pieces, rel=1e-6)
        # out of reach of the default tau from 7 pieces on, however unequal the segments
        assert (got[sid] < 3) == (pieces >= 7), (pieces, got[sid])
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "a pair's score is at most `2L / P`, P the pieces of both segments" in readme
    assert "below 3\nfrom 7 pieces on" in readme


def test_random_dense_matches_reference_and_sparse_bound_contains_it(tmp_path):
    rng = np.random.default_rng(7)
    for seqs, pairs in ((SINGLE, False), (PAIRS, True)):
        db = tmp_path / f"r{pairs}.db"
        att = [dirichlet_attention(rng, 2, 2, q.length) for q in seqs]
        build_store(db, seqs, att, pairs=pairs, run_id=1)
        build_store(db, seqs, att, pairs=pairs, run_id=2, top_k=3, add_corpus=False)
        dense = _by_key(headdb.scores(db, run=1))
        sparse = _by_key(headdb.scores(db, run=2))
        assert dense.keys() == sparse.keys()
        n = 0
        for (role, layer, head, sid), row in dense.items():
            ref = sentence_score(att[sid][layer, head], sieves(seqs[sid], pairs)[role])
            assert ref is not None
            assert row.score == pytest.approx(ref[0], rel=1e-6, abs=1e-6)
            assert row.n_queries == ref[1]
            sp = sparse[(role, layer, head, sid)]
            assert sp.score <= row.score + 1e-6
            assert row.score <= sp.score_upper + 1e-6
            n += sp.score_upper > sp.score + 1e-6
        assert n > 0  # the bound is not trivially tight


def test_score_views_in_sql(tmp_path):
    db = tmp_path / "v.db"
    att = _attention(SINGLE, 1, 2, lambda q, l, h: np.full((q.length, q.length), 1.0 / q.length))
    build_store(db, SINGLE, att)
    df = headdb.sql(db, "SELECT * FROM scores_local ORDER BY sentence_id, layer, head")
    assert list(df.columns) == ["run_id", "layer", "head", "sentence_id", "score", "score_upper", "n_queries"]
    np.testing.assert_allclose(df["score"], 1.0, atol=1e-6)
    sv = headdb.sql(db, "SELECT count(*) AS n FROM sieve_obj")
    assert sv["n"][0] == sum(len(S) for q in SINGLE for S in sieves(q, False)["obj"].values())


@pytest.mark.parametrize("chunk_rows", [1, 20, 60])
def test_a_run_scored_in_pieces_gives_the_one_query_scores(tmp_path, monkeypatch, chunk_rows):
    """A run larger than CHUNK_ROWS attention rows is scored in ranges of whole sentences; the
    scores are those of one query over the whole run (sums in another order: 1e-12)."""
    import importlib

    scores_mod = importlib.import_module("headdb.scores")
    rng = np.random.default_rng(11)
    seqs = SINGLE * 4
    att = [dirichlet_attention(rng, 2, 2, q.length) for q in seqs]
    db = tmp_path / "s.db"
    build_store(db, seqs, att, pairs=False, run_id=1, top_k=3)
    whole = headdb.scores(db, run=1)
    con = headdb_connect(db)
    ranges = scores_mod._sentence_ranges(con, 1)
    con.close()
    assert len(ranges) == 1
    monkeypatch.setattr(scores_mod, "CHUNK_ROWS", chunk_rows)
    con = headdb_connect(db)
    pieces = scores_mod._sentence_ranges(con, 1)
    con.close()
    # consecutive, covering every sentence; each piece within the limit unless one sentence exceeds it
    assert pieces[0][0] == 0 and pieces[-1][1] == len(seqs) - 1 and len(pieces) > 1
    assert all(b[0] == a[1] + 1 for a, b in zip(pieces, pieces[1:]))
    if chunk_rows == 1:
        assert pieces == [(i, i) for i in range(len(seqs))]
    parted = headdb.scores(db, run=1)
    assert len(parted) == len(whole)
    # sorted by role (in role order), layer, head, sentence_id, however many pieces
    for df in (whole, parted):
        key = list(zip(df["role"].cat.codes, df["layer"], df["head"], df["sentence_id"]))
        assert key == sorted(key) and len(set(key)) == len(key)
    assert (parted[["role", "layer", "head", "sentence_id", "n_queries"]].astype(str).to_numpy()
            == whole[["role", "layer", "head", "sentence_id", "n_queries"]].astype(str).to_numpy()).all()
    np.testing.assert_allclose(parted["score"], whole["score"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parted["score_upper"], whole["score_upper"], rtol=1e-12, atol=1e-12)


def headdb_connect(db):
    from headdb.db import connect

    return connect(db, read_only=True)


STEP16 = 1 / 65535 + 2**-24  # what a 16-bit weight may lie below the model's (queries/framework/scores.sql)


@pytest.mark.parametrize("top_k", [3, None], ids=["top3", "every-key"])
def test_16_bit_weights_keep_score_a_lower_and_score_upper_an_upper_bound(tmp_path, top_k):
    """A run that stores weights rounded down to 1/65535 steps: its score never exceeds the dense
    one and its score_upper never falls below it (with every key stored, only the rounding term
    of the bound keeps that true), and both are within the rounding of the float32 run's."""
    rng = np.random.default_rng(11)
    db = tmp_path / "w16.db"
    att = [dirichlet_attention(rng, 2, 3, q.length) for q in SINGLE]
    build_store(db, SINGLE, att, run_id=1)
    build_store(db, SINGLE, att, run_id=2, top_k=top_k, add_corpus=False)
    build_store(db, SINGLE, att, run_id=3, top_k=top_k, add_corpus=False, weight_bits=16)
    dense, w32, w16 = (_by_key(headdb.scores(db, run=r)) for r in (1, 2, 3))
    assert dense.keys() == w32.keys() == w16.keys()
    below = 0
    for key, d in dense.items():
        a, b = w32[key], w16[key]
        length = SINGLE[key[3]].length
        assert b.score <= d.score + 1e-12 and d.score <= b.score_upper + 1e-12, (key, b, d)
        assert a.score - length * STEP16 <= b.score <= a.score + 1e-12
        assert b.score_upper >= a.score_upper - 1e-12  # wider by the rounding terms alone
        below += b.score < d.score - 1e-9
    assert below > 0  # the rounding is visible: without its term the bound would fail here
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        kinds = {table: dict(con.execute(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id").fetchall())
                 for table in ("edge_store", "edge_store16")}
        got = con.execute("SELECT e.weight, s.weight16 FROM edges AS e JOIN edge_store16 AS s USING "
                          "(run_id, sentence_id, layer, head, query_pos, key_pos) WHERE run_id = 3").fetchnumpy()
    finally:
        con.close()
    # the float32 runs 1 and 2 in edge_store, the 16-bit run 3 in edge_store16
    assert sorted(kinds["edge_store"]) == [1, 2] and sorted(kinds["edge_store16"]) == [3]
    assert len(got["weight"]) == kinds["edge_store16"][3] > 0
    np.testing.assert_array_equal(got["weight"], (got["weight16"] / 65535).astype(np.float32))


def _round_to(dtype: str, a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 or float16, as the model's maps are."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round half to even on the top 16 bits
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_rows_keep_score_upper_an_upper_bound(tmp_path, dtype):
    """Under --dtype bfloat16 / float16 a row of the model's map sums to 1 only to that precision
    (bfloat16 rows of EWT up to 1.003), so 1 - stored underestimates what the unstored keys hold;
    score_upper must still bound the dense run's score from the same maps."""
    rng = np.random.default_rng(5)
    db = tmp_path / "half.db"
    att = [_round_to(dtype, rng.dirichlet(np.full(q.length, 0.05), size=(2, 3, q.length))) for q in SINGLE]
    assert max(float(a.astype(np.float64).sum(-1).max()) for a in att) > 1 + 1e-4  # rows over 1
    build_store(db, SINGLE, att, run_id=1, dtype=dtype)
    build_store(db, SINGLE, att, run_id=2, top_k=2, add_corpus=False, dtype=dtype)
    dense, sparse = (_by_key(headdb.scores(db, run=r)) for r in (1, 2))
    assert dense.keys() == sparse.keys()
    for key, d in dense.items():
        s = sparse[key]
        assert s.score <= d.score + 1e-12 and d.score <= s.score_upper + 1e-12, (key, s, d)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_sparse_score_and_score_upper_are_the_contracts_bound(tmp_path, top_k):
    """score_upper is SCORES.md's bound itself, not just any number above the dense score: the
    in-sieve stored mass plus min(residual, unstored sieve keys * smallest stored weight) per
    query, recomputed here from the attention and the top-k keys."""
    rng = np.random.default_rng(23)
    n = 0
    for seqs, pairs in ((SINGLE, False), (PAIRS, True)):
        db = tmp_path / f"b{pairs}{top_k}.db"
        # peaked rows, so that the residual and the count bound each decide some queries
        att = [rng.dirichlet(np.full(q.length, 0.3), size=(2, 2, q.length)).astype(np.float32) for q in seqs]
        build_store(db, seqs, att, pairs=pairs, top_k=top_k)
        got = _by_key(headdb.scores(db))
        for (role, layer, head, sid), row in got.items():
            ref = sparse_sentence_bounds(att[sid][layer, head], sieves(seqs[sid], pairs)[role], top_k)
            assert ref is not None
            assert row.score == pytest.approx(ref[0], rel=1e-6, abs=1e-9), (role, layer, head, sid)
            assert row.score_upper == pytest.approx(ref[1], rel=1e-6, abs=1e-9), (role, layer, head, sid)
            n += 1
    assert n > 0


def test_a_sieve_without_stored_keys_scores_zero_and_its_bound_is_the_residual(tmp_path):
    """Rows that put 0.6 on the last key and spread 0.4 over the others, stored top-1: no stored
    key is [CLS], so delimiter_cls scores 0 (not NULL), and each query's bound is
    min(residual 0.4, 1 unstored key * 0.6) = 0.4, so score_upper = L * 0.4."""
    db = tmp_path / "miss.db"
    att = []
    for q in SINGLE:
        row = np.full(q.length, 0.4 / (q.length - 1))
        row[-1] = 0.6
        att.append(np.broadcast_to(row, (1, 1, q.length, q.length)).astype(np.float32))
    build_store(db, SINGLE, att, top_k=1)
    got = headdb.scores(db, roles=["delimiter_cls"])
    assert len(got) == len(SINGLE)
    for r in got.itertuples(index=False):
        length = SINGLE[r.sentence_id].length
        assert r.score == 0.0
        assert r.score_upper == pytest.approx(0.4 * length, rel=1e-6)


def test_every_key_stored_gives_score_upper_equal_to_score_even_for_rows_over_one(tmp_path):
    """With every key stored nothing is unstored, so the bound adds nothing: score_upper equals
    score, also where float32 rows sum a little over 1 (as softmax rows do), which must not make
    the residual negative and the bound fall below the score."""
    rng = np.random.default_rng(3)
    db = tmp_path / "over.db"
    att = [(dirichlet_attention(rng, 2, 2, q.length) * np.float32(1 + 2e-6)).astype(np.float32) for q in SINGLE]
    assert min(float(a.astype(np.float64).sum(-1).min()) for a in att) > 1.0
    build_store(db, SINGLE, att)
    got = headdb.scores(db)
    assert len(got) > 0
    np.testing.assert_array_equal(got["score_upper"].to_numpy(), got["score"].to_numpy())


def test_16_bit_score_upper_bounds_weights_that_lose_almost_a_whole_step(tmp_path):
    """The worst case of the 16-bit rounding: weights just below a multiple of 1/65535 lose almost
    1/65535 each when rounded down (more than 1/65536), yet score_upper with every key stored
    still bounds the score of the model's weights (the sentence score recomputed here)."""
    k = 20
    a = np.float32((k + 1) / 65535)
    while np.floor(np.float64(a) * 65535) > k:  # the largest float32 that rounds down to k
        a = np.nextafter(a, np.float32(0))
    loss = float(a) - float(np.float32(k / 65535))  # what the stored weight lies below the model's
    assert loss > 1 / 65536
    att = []
    for q in SINGLE:
        row = np.full(q.length, a, dtype=np.float32)
        row[-1] = np.float32(1 - (q.length - 1) * float(a))
        att.append(np.broadcast_to(row, (1, 2, q.length, q.length)).copy())
    db = tmp_path / "worst16.db"
    build_store(db, SINGLE, att, weight_bits=16)
    got = _by_key(headdb.scores(db))
    below = 0
    for (role, layer, head, sid), row in got.items():
        ref = sentence_score(att[sid][layer, head].astype(np.float64), sieves(SINGLE[sid], False)[role])
        assert ref is not None
        assert row.score <= ref[0] + 1e-12 and ref[0] <= row.score_upper + 1e-12, (role, sid, row, ref)
        below += row.score < ref[0] - 1e-9
    assert below > 0


def test_bfloat16_rows_far_over_one_keep_score_upper_an_upper_bound(tmp_path):
    """A three-key bfloat16 row whose keys were all rounded up: it sums to 1 + 0.0029 (over 2^-9,
    within bfloat16's 2^-8), so the two unstored keys of a top-1 run hold more than 1 - stored,
    and score_upper must still bound the score of those weights (recomputed here)."""
    row = _round_to("bfloat16", np.array([0.19604176, 0.54884535, 0.2551129], dtype=np.float32))
    assert 2**-9 < float(row.astype(np.float64).sum()) - 1 < 2**-8
    seqs = [SINGLE[2]]  # [CLS] w [SEP]: local's sieve of every query is the whole row
    att = [np.broadcast_to(row, (1, 1, 3, 3)).copy()]
    db = tmp_path / "bf16.db"
    build_store(db, seqs, att, top_k=1, dtype="bfloat16")
    got = headdb.scores(db, roles=["local"])
    assert len(got) == 1
    ref = sentence_score(att[0][0, 0].astype(np.float64), sieves(seqs[0], False)["local"])
    assert got["score"][0] <= ref[0] + 1e-12 and ref[0] <= got["score_upper"][0] + 1e-12
