"""The batch sparsification on the model's device (`model.device_edges`) against the numpy
reference (`sparsify.sentence_edges` per sentence): the same edges, in the same order, with
bitwise-equal weights, for top-k, min-mass and dense rows of padded batches. Random attention
tensors, no model weights (torch on the CPU; on CUDA too where there is one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headdb.model import device_edges
from headdb.sparsify import BatchEdges, batch_edges, sentence_edges

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def padded_attention(rng: np.random.Generator, lengths: list[int], layers: int, heads: int, temperature: float,
                     dtype: torch.dtype) -> torch.Tensor:
    """``[batch, layer, head, query, key]`` as an eager encoder returns a padded batch: softmax
    over each input's keys, exact zeros on padding keys, garbage rows for padding queries; the
    softmax in ``dtype`` (bf16 gives many ties), returned as float32 like ``forward``."""
    width = max(lengths)
    logits = torch.from_numpy(rng.normal(size=(len(lengths), layers, heads, width, width)) * temperature)
    for b, n in enumerate(lengths):
        logits[b, ..., n:] = -torch.inf
    att = torch.softmax(logits.to(dtype), dim=-1).float()
    for b, n in enumerate(lengths):
        att[b, :, :, n:, :] = torch.from_numpy(rng.random(size=(layers, heads, width - n, width))).float()
    return att


def ranked(att: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What `AttentionModel._ranked` hands over: the model's own top-k, or every key (dense)."""
    width = att.shape[-1]
    if k is None:
        return att, torch.arange(width, device=att.device).expand_as(att)
    r = torch.topk(att, k=min(k, width), dim=-1, sorted=True)
    return r.values, r.indices


def reference(values: torch.Tensor, indices: torch.Tensor, lengths: list[int], min_mass: float | None) -> BatchEdges:
    v, i = values.cpu().numpy(), indices.to(torch.int16).cpu().numpy()
    per_sentence = [sentence_edges(v[b], i[b], n, min_mass) for b, n in enumerate(lengths)]
    return BatchEdges.from_sentences(per_sentence)


def assert_same(got: BatchEdges, want: BatchEdges) -> None:
    for name, dtype in (("sentence", np.int32), ("layer", np.int16), ("head", np.int16), ("query_pos", np.int16),
                        ("key_pos", np.int16), ("weight", np.float32)):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == dtype and w.dtype == dtype, name
        assert np.array_equal(g.view(np.uint8), w.view(np.uint8)), name  # bitwise, in order


cases = st.fixed_dictionaries({
    "lengths": st.lists(st.integers(1, 14), min_size=1, max_size=5),
    "layers": st.integers(1, 3), "heads": st.integers(1, 3),
    "k": st.one_of(st.none(), st.integers(1, 16)),
    "min_mass": st.one_of(st.none(), st.floats(0.01, 1.0), st.sampled_from([0.5, 0.9, 0.95, 1.0])),
    "temperature": st.floats(0.0, 6.0), "bf16": st.booleans(), "sort": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
})


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases)
def test_device_edges_equal_the_numpy_reference(device, c):
    if c["k"] is None:
        c = dict(c, min_mass=None)  # dense: every key (ingest refuses --dense with --min-mass)
    lengths = sorted(c["lengths"]) if c["sort"] else c["lengths"]  # ingest sorts by length; any order works
    rng = np.random.default_rng(c["seed"])
    att = padded_attention(rng, lengths, c["layers"], c["heads"], c["temperature"],
                           torch.bfloat16 if c["bf16"] else torch.float64)
    values, indices = ranked(att.to(device), c["k"])
    got = device_edges(values, indices, torch.tensor(lengths, device=device), c["min_mass"])
    want = reference(values, indices, lengths, c["min_mass"])
    assert_same(got, want)
    assert_same(batch_edges(values.cpu().numpy(), indices.to(torch.int16).cpu().numpy(), lengths, c["min_mass"]),
                want)
    # with ids (ingestion passes corpus sentence ids): each edge carries its input's id
    ids = np.asarray(rng.permutation(10_000)[: len(lengths)] + 7, dtype=np.int32)
    want.sentence = ids[want.sentence]
    assert_same(device_edges(values, indices, torch.tensor(lengths, device=device), c["min_mass"],
                             torch.from_numpy(ids).to(device)), want)
    assert_same(batch_edges(values.cpu().numpy(), indices.to(torch.int16).cpu().numpy(), lengths, c["min_mass"],
                            ids), want)
    assert_same(BatchEdges.from_sentences(
        [sentence_edges(values[b].cpu().numpy(), indices[b].to(torch.int16).cpu().numpy(), n, c["min_mass"])
         for b, n in enumerate(lengths)], ids), want)


@pytest.mark.parametrize("device", DEVICES)
def test_min_mass_reached_exactly_keeps_the_crossing_entry(device):
    # rows whose cumulative mass hits min_mass exactly (binary fractions) and rows with padding
    values = torch.tensor([[[[[0.5, 0.25, 0.25, 0.0], [0.75, 0.25, 0.0, 0.0]],
                             [[0.5, 0.125, 0.125, 0.25], [1.0, 0.0, 0.0, 0.0]]]]]).expand(2, 1, 2, 2, 4).clone()
    indices = torch.tensor([[[[[1, 0, 2, 3], [0, 3, 1, 2]], [[2, 1, 0, 3], [3, 0, 1, 2]]]]]).expand(2, 1, 2, 2, 4).clone()
    lengths = [4, 3]
    for min_mass in (0.5, 0.75, 0.875, 1.0, None):
        got = device_edges(values.to(device), indices.to(device), torch.tensor(lengths, device=device), min_mass)
        assert_same(got, reference(values, indices, lengths, min_mass))
    got = device_edges(values.to(device), indices.to(device), torch.tensor(lengths, device=device), 0.75)
    # sentence 0, head 0, query 0: 0.5 then 0.25 reaches 0.75: both kept, the third not
    assert got.key_pos[:2].tolist() == [1, 0] and got.weight[:2].tolist() == [0.5, 0.25]
    assert got.sentence[0] == 0 and got.query_pos[:2].tolist() == [0, 0]


def test_from_sentences_skips_inputs_without_edges():
    v = np.array([[[[0.6, 0.4]]]], dtype=np.float32)
    i = np.array([[[[1, 0]]]], dtype=np.int16)
    e = sentence_edges(v, i, 2, None)
    flat = BatchEdges.from_sentences([None, e, None, e])
    assert flat.sentence.tolist() == [1, 1, 3, 3] and flat.key_pos.tolist() == [1, 0, 1, 0]
    assert len(BatchEdges.from_sentences([None])) == 0


def test_host_buffers_reuse_the_smallest_that_fits(monkeypatch):
    """Page-locked buffers are slow to allocate, so handed-back ones serve later copies."""
    from headdb.model import HostBuffers

    made = []

    def alloc(nbytes):
        made.append(nbytes)
        return torch.empty(nbytes, dtype=torch.uint8)  # pageable here: the bookkeeping is what is tested

    pool = HostBuffers(keep=2)
    monkeypatch.setattr(pool, "_alloc", alloc)
    a = pool.take(3 << 20)
    assert a.numel() == 4 << 20  # a whole power of two, the size torch's host allocator really gives
    b = pool.take((8 << 20) + 1)
    assert b.numel() == 16 << 20
    pool.give(b)
    pool.give(a)
    assert pool.take(3 << 20) is a  # the smallest that fits, wherever it is in the list
    pool.give(a)
    assert pool.take(4 << 20) is a and pool.take(12 << 20) is b  # the whole class serves
    assert len(made) == 2 and pool.allocs == 2 and pool.alloc_bytes == 20 << 20 and pool.alloc_seconds >= 0
    c = pool.take(20 << 20)  # none fits: a new one
    assert len(made) == 3 and c.numel() == 32 << 20 and pool.alloc_bytes == 52 << 20
    for buf in (c, a, b):
        pool.give(buf)
    assert sorted(x.numel() for x in pool._free) == [16 << 20, 32 << 20]  # at most `keep` wait, the smallest dropped
    assert HostBuffers.size_class(1) == 1 << 20 and HostBuffers.size_class(1 << 20) == 1 << 20
    assert HostBuffers.size_class((1 << 20) + 1) == 2 << 20



@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases)
def test_ties_rank_by_key_position_as_the_reference_does(c):
    """torch.topk orders equal weights as it likes (keys 7 and 5 of a uniform row of 9), and under
    bfloat16 3% of EWT's rows tie at the k-th weight: the ingest's ranking (model._top_keys) is
    the reference's stable one, lower key position first, wherever a weight is not 0 (padding)."""
    from headdb.model import _top_keys
    from headdb.sparsify import topk_rows

    if c["k"] is None:
        return
    rng = np.random.default_rng(c["seed"])
    att = padded_attention(rng, c["lengths"], c["layers"], c["heads"], c["temperature"],
                           torch.bfloat16 if c["bf16"] else torch.float32)
    values, indices = _top_keys(torch, [att[:, layer] for layer in range(c["layers"])], c["k"])
    want_values, want_indices = topk_rows(att.numpy(), c["k"])
    assert np.array_equal(values.numpy(), want_values)
    nonzero = want_values > 0
    assert np.array_equal(indices.numpy()[nonzero], want_indices[nonzero])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases)
def test_ranking_with_the_padding_rows_left_out_ranks_the_inputs_rows_as_the_reference(c):
    """A CPU ingest ranks each layer's map leaving the padding's query rows (never stored) in
    topk's order (``_rank_layer(..., real)``): every input's own rows come out as the reference's
    ranking, ties by key position."""
    from headdb.model import _rank_layer, _stack_ranked
    from headdb.sparsify import topk_rows

    if c["k"] is None:
        return
    rng = np.random.default_rng(c["seed"])
    att = padded_attention(rng, c["lengths"], c["layers"], c["heads"], c["temperature"],
                           torch.bfloat16 if c["bf16"] else torch.float32)
    width = att.shape[-1]
    real = torch.from_numpy(np.arange(width)[None, :] < np.array(c["lengths"])[:, None])
    values, indices = _stack_ranked(torch, [_rank_layer(torch, att[:, layer], c["k"], real)
                                            for layer in range(c["layers"])], c["k"])
    want_values, want_indices = topk_rows(att.numpy(), c["k"])
    rows = np.broadcast_to(real.numpy()[:, None, None, :], values.shape[:4])
    assert np.array_equal(values.numpy()[rows], want_values[rows])
    nonzero = (want_values > 0) & rows[..., None]
    assert np.array_equal(indices.numpy()[nonzero], want_indices[nonzero])


def test_a_uniform_row_keeps_its_first_keys():
    from headdb.model import _top_keys

    row = torch.full((1, 1, 1, 9), 1 / 9)
    assert _top_keys(torch, [row], 2)[1].flatten().tolist() == [0, 1]
    assert _top_keys(torch, [row], 12)[1].flatten().tolist() == list(range(9))  # k beyond the row: all, in order
    boundary = torch.tensor([[[[0.1, 0.3, 0.2, 0.2, 0.2]]]])
    assert _top_keys(torch, [boundary], 2)[1].flatten().tolist() == [1, 2]
