"""Sparse attention: which keys of each attention row are stored. Pure numpy.

The model module hands over each row's largest weights in descending order (``values``) with
their key positions (``indices``); this module decides what is kept and flattens it to edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


DEFAULT_TOP_K = 8  # keys kept per attention row unless told (99.86% of EWT's decisions equal a dense run's)


@dataclass(frozen=True)
class Sparsity:
    """``top_k`` keys per row (None: every key), cut earlier once ``min_mass`` is reached."""

    top_k: int | None = DEFAULT_TOP_K
    min_mass: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if self.min_mass is not None and not (0.0 < self.min_mass <= 1.0):
            raise ValueError("min_mass must be in (0, 1]")

    @property
    def dense(self) -> bool:
        return self.top_k is None and self.min_mass is None


def topk_rows(attention: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k over the last axis: (values descending, key positions). ``k=None``: all."""
    n = attention.shape[-1]
    k = n if k is None else min(k, n)
    # stable sort of -weights: ties keep the lower key position first, as the ingest ranks them
    # (model._top_keys: torch.topk alone orders ties as it likes)
    order = np.argsort(-attention, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(attention, order, axis=-1), order


def keep_mask(values: np.ndarray, indices: np.ndarray, length: int, min_mass: float | None) -> np.ndarray:
    """Which of the ranked entries of each row are stored.

    Entries pointing past the sequence (padding) are dropped; with ``min_mass``, a row stops
    after the entry whose cumulative mass reaches it (that entry is kept).
    """
    valid = indices < length
    if min_mass is None:
        return valid
    v = np.where(valid, values, 0).astype(np.float64)
    before = np.cumsum(v, axis=-1) - v
    return valid & (before < min_mass)


@dataclass
class SentenceEdges:
    layer: np.ndarray
    head: np.ndarray
    query_pos: np.ndarray
    key_pos: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)


def sentence_edges(values: np.ndarray, indices: np.ndarray, length: int, min_mass: float | None) -> SentenceEdges:
    """Flatten one sentence's ranked rows ``[layer, head, query_pos, rank]`` into edges.

    Only the first ``length`` query rows are read. Edges come out ordered by
    (layer, head, query_pos, rank).
    """
    values = values[:, :, :length]
    indices = indices[:, :, :length]
    mask = keep_mask(values, indices, length, min_mass)
    layer, head, query, _ = np.nonzero(mask)
    return SentenceEdges(
        layer.astype(np.int16),
        head.astype(np.int16),
        query.astype(np.int16),
        indices[mask].astype(np.int16),
        values[mask].astype(np.float32),
    )


@dataclass
class BatchEdges(SentenceEdges):
    """The kept edges of a whole batch as flat arrays, ordered by (input, layer, head,
    query_pos, rank): ``sentence`` says each edge's input (int32): its position in the batch, or
    the id the producer was given for it (``ids``: ingestion passes the corpus sentence ids, so
    that the writer stores the column as is); the rest as in :class:`SentenceEdges`."""

    sentence: np.ndarray
    #: set when the arrays are views of a reusable host buffer (model.device_edges on a GPU):
    #: hands the buffer back once the edges are stored; the arrays must not be read after
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_sentences(cls, edges: list[SentenceEdges | None], ids=None) -> BatchEdges:
        """Concatenate per-sentence edges (None: an input without edges, e.g. skipped);
        ``sentence`` is ``ids[i]`` for the i-th (default: i)."""
        parts = [(i if ids is None else ids[i], e) for i, e in enumerate(edges) if e is not None and len(e)]
        if not parts:
            return cls(*(np.zeros(0, np.int16) for _ in range(4)), np.zeros(0, np.float32),
                       sentence=np.zeros(0, np.int32))
        return cls(
            *(np.concatenate([getattr(e, f) for _, e in parts]) for f in ("layer", "head", "query_pos", "key_pos")),
            np.concatenate([e.weight for _, e in parts]),
            sentence=np.repeat(np.array([i for i, _ in parts], dtype=np.int32), [len(e) for _, e in parts]),
        )


def batch_edges(values: np.ndarray, indices: np.ndarray, lengths, min_mass: float | None,
                ids=None) -> BatchEdges:
    """:func:`sentence_edges` of a whole padded batch ``[batch, layer, head, query_pos, rank]`` of
    inputs of the given ``lengths`` at once (numpy, no loop over the inputs): the same edges as
    every input's ``sentence_edges`` concatenated in batch order, bit for bit; ``sentence`` holds
    ``ids[input]`` (default: the input's position). On a GPU, ``model.device_edges`` does the
    same in torch (tests/test_sparsify_torch.py checks both)."""
    n_batch, _, _, width, _ = values.shape
    n = np.asarray(lengths, dtype=np.int64).reshape(n_batch, 1, 1, 1, 1)
    keep = keep_mask(values, indices, n, min_mass)  # per row, so the same as per input
    keep &= (np.arange(width) < n.reshape(n_batch, 1))[:, None, None, :, None]  # real query rows
    # each row's coordinates repeated by its kept count: np.nonzero's order, without its cost
    counts = keep.sum(axis=-1, dtype=np.int64).ravel()
    rows = np.indices(keep.shape[:-1], dtype=np.int32).reshape(4, -1)
    layer, head, query = (np.repeat(rows[i].astype(np.int16), counts) for i in (1, 2, 3))
    return BatchEdges(layer, head, query, indices[keep].astype(np.int16), values[keep].astype(np.float32),
                      sentence=np.repeat(rows[0] if ids is None else np.asarray(ids, dtype=np.int32)[rows[0]], counts))
