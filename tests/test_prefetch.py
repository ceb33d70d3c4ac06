"""ingest._prefetch: the same items in the same order, errors where they happened."""

from __future__ import annotations

import importlib

import pytest

ingest_module = importlib.import_module("headdb.ingest")  # headdb.ingest is also the function


@pytest.mark.parametrize("enabled", [False, True])
def test_prefetch_keeps_items_and_order(enabled):
    assert list(ingest_module._prefetch(iter(range(50)), enabled=enabled)) == list(range(50))


@pytest.mark.parametrize("enabled", [False, True])
def test_prefetch_raises_where_the_error_happened(enabled):
    def items():
        yield 1
        yield 2
        raise ValueError("line 3 is bad")

    got = []
    with pytest.raises(ValueError, match="line 3 is bad"):
        for item in ingest_module._prefetch(items(), enabled=enabled):
            got.append(item)
    assert got == [1, 2]
