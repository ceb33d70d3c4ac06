"""Sparse attention: which keys of each attention row are stored. Pure numpy.

The model module hands over each row's largest weights in descending order (``values``) with
their key positions (``indices``); this module decides what is kept and flattens it to edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sparsity:
    """``top_k`` keys per row (None: every key), cut earlier once ``min_mass`` is reached."""

    top_k: int | None = 8
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
    # stable sort of -weights: ties keep the lower key position first, like torch.topk on CPU
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
