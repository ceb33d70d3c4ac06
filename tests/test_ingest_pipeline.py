"""Ingestion's pipeline settings and its reading thread (ingest._ahead), without a model (fast)."""

from __future__ import annotations

import importlib
import itertools
import threading
import time

import pytest

ingest_mod = importlib.import_module("headdb.ingest")


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "headdb-read-ahead"]


def test_items_arrive_in_order_and_the_wait_is_timed():
    timings: dict[str, float] = {}
    assert list(ingest_mod._ahead(iter(range(50)), timings)) == list(range(50))
    assert timings["read_wait"] >= 0
    assert not _reader_threads()


def test_an_error_on_the_thread_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("window 3 is bad")

    got = []
    with pytest.raises(ValueError, match="window 3 is bad"):
        for x in ingest_mod._ahead(items(), {}):
            got.append(x)
    assert got == [1, 2]


def test_closing_early_stops_the_thread_and_it_reads_at_most_depth_ahead():
    made = []

    def endless():
        for i in itertools.count():
            made.append(i)
            yield i

    gen = ingest_mod._ahead(endless(), {}, depth=1)
    assert next(gen) == 0 and next(gen) == 1
    time.sleep(0.2)
    assert len(made) <= 4  # two taken, one queued, one waiting to be queued
    gen.close()
    assert not _reader_threads()
    n = len(made)
    time.sleep(0.2)
    assert len(made) == n


def test_read_ahead_is_on_for_cuda_only_unless_set(monkeypatch):
    class Model:
        device = "cuda:0"

    monkeypatch.setattr(ingest_mod, "READ_AHEAD", None)
    assert ingest_mod._read_ahead(Model())
    Model.device = "cpu"
    assert not ingest_mod._read_ahead(Model())
    monkeypatch.setattr(ingest_mod, "READ_AHEAD", True)
    assert ingest_mod._read_ahead(Model())


def test_gpu_ingests_cut_smaller_windows(monkeypatch):
    assert ingest_mod._window_batches("cuda:0") == ingest_mod.GPU_WINDOW_BATCHES == 2
    assert ingest_mod._window_batches("cpu") == ingest_mod.WINDOW_BATCHES == 16
    monkeypatch.setattr(ingest_mod, "GPU_WINDOW_BATCHES", None)
    assert ingest_mod._window_batches("cuda:0") == 16
    class Sentence:
        def __init__(self, i):
            self.sentence_id = i

    sentences = iter([Sentence(i) for i in range(10)])

    class Encoding:
        def __init__(self, s):
            self.sentence, self.length = s, -s.sentence_id  # longest first in corpus order

    class Tokenizing:
        device = "cuda:0"

        def encode(self, window, truncate):
            return [Encoding(s) for s in window]

    monkeypatch.setattr(ingest_mod, "GPU_WINDOW_BATCHES", 2)
    windows = list(ingest_mod._encoded_windows(sentences, Tokenizing(), False, 2, set(), {}))
    assert [[e.sentence.sentence_id for e in w] for w in windows] == [[3, 2, 1, 0], [7, 6, 5, 4], [9, 8]]


def test_a_window_whose_sentences_all_committed_is_not_tokenized(monkeypatch):
    """A resume reads the committed part of the corpus again but tokenizes only the windows that
    hold a sentence still to run (the batches cut from them skip the committed ones)."""
    class Sentence:
        def __init__(self, i):
            self.sentence_id = i

    class Encoding:
        def __init__(self, s):
            self.sentence, self.length = s, 1

    class Tokenizing:
        device = "cpu"
        seen: list = []

        def encode(self, window, truncate):
            self.seen.append([s.sentence_id for s in window])
            return [Encoding(s) for s in window]

    monkeypatch.setattr(ingest_mod, "WINDOW_BATCHES", 2)
    model = Tokenizing()
    windows = list(ingest_mod._encoded_windows(iter([Sentence(i) for i in range(10)]), model, False, 2,
                                               {0, 1, 2, 3, 5, 8, 9}, {}))
    assert model.seen == [[4, 5, 6, 7]] and [[e.sentence.sentence_id for e in w] for w in windows] == model.seen


def test_a_gpu_window_is_at_least_one_batch(monkeypatch):
    """GPU_WINDOW_BATCHES 0 made windows of no sentences: a CUDA ingest read nothing and stored an
    empty run."""
    monkeypatch.setattr(ingest_mod, "GPU_WINDOW_BATCHES", 0)
    assert ingest_mod._window_batches("cuda:0") == 1
    assert ingest_mod._window_batches("cpu") == ingest_mod.WINDOW_BATCHES
