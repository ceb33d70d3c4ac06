"""Ingestion: corpus -> words -> aligned tokens -> attention -> sparse edges -> DuckDB.

Streams in length-bucketed batches; consecutive batches commit together, atomically, once they
hold ``COMMIT_EDGES`` edges (and at the end). Batches are a fixed function of the corpus and the
settings, so re-running an interrupted ingest skips the batches that committed and ends with
exactly what an uninterrupted run stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from headdb import __version__
from headdb.corpus import (ReadStats, Sentence, check_file, file_sha256, has_corpus_extension, infer_format,
                           read_corpus, validate)
from headdb.db import check_writable, connect, interrupted, transaction
from headdb.errors import (CLI_NAMES, DatabaseError, HeaddbError, IngestInterrupted, InputError, ModelError, flag,
                           option, yes_no)
from headdb.sparsify import DEFAULT_TOP_K, BatchEdges, Sparsity

#: Sentences tokenized and sorted by length together; batches are cut from each window.
WINDOW_BATCHES = 16
#: The same on CUDA (None: WINDOW_BATCHES). There the model waits for the first window to be read
#: and tokenized before anything can start (with batches of 512 a window of 16 is 8,192
#: sentences), and a window's batches grow with its sentences, so each needs a larger
#: page-locked buffer than the ones the writers hand back. bert-base on 10,005 EWT sentences,
#: batches of 512, one H200 box, one process: 1,410 sentences/s with windows of 16 (3.5 GB
#: page-locked), 1,522 with 4 (2.5 GB), 1,809 with 2 (1.5 GB) (docs/benchmarks.md).
GPU_WINDOW_BATCHES: int | None = 2
#: Groups of batches waiting for a writer, beyond one per writer thread (see _Writer); each
#: holds its edges in host memory (page-locked on a GPU).
WRITE_DEPTH = 2
#: Batches are committed together once they hold this many edges (0: every batch on its own).
#: Each commit has a fixed cost (an INSERT per table) and small appends leave DuckDB's row
#: groups partly filled, so on 2 cores one commit per batch of 32 EWT sentences cost 3.6 s of
#: a 9 s ingest, against 2.3 s with 2 M edges a commit (docs/benchmarks.md). What an interrupted
#: run loses is at most that much work, which a resume redoes.
COMMIT_EDGES = 2_000_000


@dataclass
class IngestResult:
    run_id: int
    run_name: str
    resumed: bool
    already_done: bool
    sentences: int = 0  # stored in this call (inputs: a pair counts once)
    #: the inputs are sentence pairs (--pairs, or a TSV corpus)
    pairs: bool = False
    #: inputs the run had committed before this call (a resumed run's; stored or skipped)
    kept_before: int = 0
    skipped: int = 0
    truncated: int = 0
    #: words of stored (not truncated) inputs that the tokenizer gave no piece (invisible
    #: characters such as U+FE0F, a lone combining mark): stored, and left out by
    #: word-level roles and accuracy
    pieceless_words: int = 0
    #: word pieces with a special token's id (``Encoded.special_in_words``)
    special_in_words: int = 0
    #: the tokenizer adds no special tokens (no [CLS] or [SEP]): the delimiter roles then have
    #: no query with a sieve, and the two texts of a pair follow each other with nothing between
    no_special_tokens: bool = False
    #: (pieces, kinds): special tokens the tokenizer adds without naming them [CLS] or [SEP] (no
    #: cls_token / bos_token, sep_token / eos_token), stored as 'other', and the kinds (cls, sep) no
    #: special token was taken for: delimiter_cls or delimiter_sep then have no samples
    unnamed_specials: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    #: (run_id, status, run_name, changed) of a run with these settings and another tokenizer or
    #: config (the model folder's tokenizer files or config.json changed since it was ingested),
    #: beside which this new run began; changed: "tokenizer", "config" or "tokenizer and config"
    other_model_files: tuple[int, str, str, str] | None = None
    edges: int = 0
    seconds: float = 0.0
    read_stats: ReadStats = field(default_factory=ReadStats)
    #: seconds per stage: read_encode (main thread, or with READ_AHEAD a reading thread; then
    #: read_wait is the main thread waiting for it), forward, topk, edges (main thread; on a GPU
    #: pin_alloc is the part of edges spent page-locking host buffers); arrow, write (writer
    #: threads, overlapping the model); write_wait (main thread blocked on the writers)
    timings: dict[str, float] = field(default_factory=dict)
    #: DuckDB threads the edge inserts ran with (see APPEND_THREADS)
    append_threads: int = 1
    #: page-locked host memory allocated for a GPU's edge copies (model.HostBuffers), bytes
    pinned_bytes: int = 0

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else 0.0


def _windows(sentences: Iterator[Sentence], size: int) -> Iterator[list[Sentence]]:
    while True:
        chunk = list(islice(sentences, size))
        if not chunk:
            return
        yield chunk


def _window_batches(device: str) -> int:
    if GPU_WINDOW_BATCHES is not None and str(device).startswith("cuda"):
        return max(1, GPU_WINDOW_BATCHES)
    return WINDOW_BATCHES


def _encoded_windows(stream: Iterator[Sentence], am, truncate: bool, batch_size: int, finished: set[int],
                     timings: dict[str, float]) -> Iterator[list]:
    """Windows of the corpus, tokenized and sorted by length (stable: ties keep corpus order),
    without those whose sentences all committed; ``timings`` gains ``read_encode``."""
    windows = _windows(stream, batch_size * _window_batches(am.device))
    while True:
        t0 = time.perf_counter()
        window = next(windows, None)
        if window is None:
            return
        if all(s.sentence_id in finished for s in window):
            continue
        encoded = am.encode(window, truncate)
        encoded.sort(key=lambda e: e.length)
        _add(timings, "read_encode", time.perf_counter() - t0)
        yield encoded


#: Read and tokenize the next window on a thread while the model runs the current one: None
#: decides by the device (see _read_ahead).
READ_AHEAD: bool | None = None


def _read_ahead(am) -> bool:
    """On a GPU the main thread mostly waits for the device and the copies, which release the
    GIL, so a reading thread's Python runs beside them; on a CPU that torch saturates it would
    take the model's cores."""
    if READ_AHEAD is not None:
        return READ_AHEAD
    return str(am.device).startswith("cuda")


def _ahead(items: Iterator[list], timings: dict[str, float], depth: int = 1) -> Iterator[list]:
    """``items`` computed on a thread, up to ``depth`` ahead of the consumer; an error there is
    raised here, in order. ``timings`` gains ``read_wait`` (the consumer waiting for an item).
    Closing the generator stops the thread at its next item."""
    done = object()
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="headdb-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            _add(timings, "read_wait", time.perf_counter() - t0)
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(0.05)


#: Raw text of at least this many sentences is parsed in several processes by default
#: (``parse.default_processes``); shorter text in this one. On 2 cores a second process took the
#: read stage of EWT dev's 2,001 texts from 2.8-3.2 s to 1.7-1.8 s (docs/benchmarks.md).
PARALLEL_PARSE_MIN_SENTENCES = 500


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class _RunKey:
    """What finds the run that an ingest resumes or says is complete.

    A run's fingerprint is ``SETTINGS.TOKENIZER-CONFIG``: the sha256 of the settings (the
    corpus, the options that change what is stored, the parser, the weights' hash, the max
    length), a dot, the sha256 of the tokenizer files (``model._tokenizer_hash``), a dash and the
    sha256 of config.json (``model._config_hash``), so that a changed tokenizer or config (the
    same weights with another position embedding, layer norm epsilon, activation) is another
    run, which can say which of the two changed. headdb's earlier versions wrote the settings'
    sha256 alone (they hashed neither), and hashed the weights as every weight file under the
    folder (``model.legacy_weights_hash``: a Trainer's folder, whose checkpoint-*/ they hashed
    too); their runs are found by those fingerprints, without a tokenizer or config to tell. The
    old weight hash is computed only where the store holds such a run of the corpus with another
    weight hash. They also described a pipeline folder without its files' hash
    (``legacy_parser_desc``, ``parse.legacy_description``): their runs of one are found by that
    description, whatever the folder holds now."""

    def __init__(self, settings: dict[str, Any], parser_desc: str, model_hash: str, max_length: int,
                 tokenizer_hash: str, config_hash: str, model: str | Path, legacy_parser_desc: str | None = None):
        self.legacy_parser_desc = legacy_parser_desc
        self.settings, self.parser_desc, self.max_length, self.model = settings, parser_desc, max_length, model
        self.model_hash = model_hash
        self.settings_digest = _fingerprint(_full_settings(settings, parser_desc, model_hash, max_length))
        self.model_files = (tokenizer_hash.removeprefix("sha256:"), config_hash.removeprefix("sha256:"))
        self.fingerprint = f"{self.settings_digest}.{'-'.join(self.model_files)}"

    def find(self, con, device: str, run_name: str | None) -> tuple[int, str, str] | None:
        """The latest run of this key on ``device`` (of the name, where one is given): run_id,
        status, run_name; None where there is none."""
        fingerprints = [self.fingerprint, self.settings_digest]  # the second: an earlier version's run
        if self.legacy_parser_desc is not None:  # a pipeline folder, which earlier versions described without its files
            older = _fingerprint(_full_settings(self.settings, self.legacy_parser_desc, self.model_hash,
                                                self.max_length))
            fingerprints += [f"{older}.{'-'.join(self.model_files)}", older]
        if con.execute(_OLDER_HASH_SQL, [device, run_name, run_name, self.settings["corpus_sha256"],
                                         self.model_hash]).fetchone()[0]:
            from headdb.model import legacy_weights_hash

            legacy = legacy_weights_hash(self.model)
            if legacy is not None:  # those versions also described a pipeline folder without its files
                fingerprints += [_fingerprint(_full_settings(self.settings, desc, legacy, self.max_length))
                                 for desc in (self.parser_desc, self.legacy_parser_desc) if desc is not None]
        return con.execute(_SAME_RUN_SQL, [fingerprints, device, run_name, run_name]).fetchone()

    def other_model_files(self, con, device: str, run_name: str | None) -> tuple[int, str, str, str] | None:
        """The latest run of these settings with another tokenizer or config (the model folder's
        tokenizer files or config.json changed since it was ingested): run_id, status, run_name and
        what changed ("tokenizer", "config", or "tokenizer and config"); None where there is none."""
        row = con.execute(_OTHER_MODEL_FILES_SQL, [self.settings_digest + ".", self.fingerprint, device, run_name,
                                                   run_name]).fetchone()
        if row is None:
            return None
        theirs = row[3].split(".", 1)[1].split("-")
        changed = " and ".join(what for what, mine, other in zip(("tokenizer", "config"), self.model_files, theirs)
                               if mine != other)
        return row[0], row[1], row[2], changed


def ingest(
    db: str | Path,
    corpus: str | Path | None = None,
    *,
    format: str | None = None,
    pairs: bool = False,
    model: str | Path | None = None,
    top_k: int | None = None,
    min_mass: float | None = None,
    dense: bool = False,
    truncate: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    run_name: str | None = None,
    parser: str | None = None,
    download: bool = False,
    new_run: bool = False,
    progress: bool | Callable[[int], None] = False,
    weight_bits: int = 32,
    parse_processes: int | None = None,
) -> IngestResult:
    """Ingest a corpus's attention into the store at ``db`` and return the run.

    ``corpus`` defaults to the bundled sample and ``model`` to the bundled all-MiniLM-L6-v2.
    ``top_k`` keys are kept per attention row (default 8), fewer where ``min_mass`` is reached
    first; ``dense`` keeps every key and takes neither. An unfinished run with the same settings
    is resumed; a finished one is returned as is unless ``new_run``. ``weight_bits`` 16 stores a
    sparse run's weights as 16-bit fixed point (rounded down to a multiple of 1/65535; a 28%
    smaller file on EWT; SCORES.md's bounds stay bounds, widened by the rounding); a dense run
    keeps float32, which reproduces the attention exactly.
    ``parse_processes``: processes that parse raw text with spaCy (default: one per core, at most
    4, for texts of at least ``PARALLEL_PARSE_MIN_SENTENCES`` sentences, else 1; never more than
    can each be given ``parse.MIN_SHARE`` texts of a batch; see :class:`headdb.parse.SpacyParser`);
    the words are the same with any number.
    """
    from headdb.resources import sample_corpus

    pairs, dense, truncate, download, new_run = (yes_no(name, value) for name, value in (
        ("pairs", pairs), ("dense", dense), ("truncate", truncate), ("download", download), ("new_run", new_run)))
    if not (isinstance(progress, bool) or callable(progress)):  # any other text drew a bar
        raise InputError(f"progress must be a callable progress(sentences), True (a bar on stderr) or False, "
                         f"not {progress!r}")
    if not isinstance(device, str):  # device=0 failed in DuckDB's lookup of the runs ('cpu' to INT32)
        raise InputError(f"{option('device')} must be text: cpu or cuda[:N], not {device!r}")
    batch_size = _whole("batch_size", batch_size, optional=False)
    limit, top_k, max_length = (_whole(name, value) for name, value in
                                (("limit", limit), ("top_k", top_k), ("max_length", max_length)))
    if run_name is not None:
        check_run_name(run_name)
    if parser is not None:  # a folder may come as a Path (named as the user wrote it, not PosixPath('...'))
        if isinstance(parser, bool) or not isinstance(parser, (str, os.PathLike)):
            raise InputError(f"{option('parser')} must be a spaCy pipeline's name or folder, not {parser!r}")
        parser = os.fspath(parser)
    if batch_size < 1:
        raise InputError(f"{option('batch_size')} must be at least 1, not {batch_size}")
    if limit is not None and limit < 1:
        raise InputError(f"{option('limit')} must be at least 1, not {limit}")
    if dense and top_k is not None:
        raise InputError(f"{flag('dense')} keeps every key; it cannot be combined with {option('top_k')}")
    if top_k is not None and top_k < 1:
        raise InputError(f"{option('top_k')} must be at least 1 (or pass {flag('dense')}), not {top_k}")
    if min_mass is not None:
        import numbers

        if isinstance(min_mass, bool) or not isinstance(min_mass, numbers.Real) or not 0 < min_mass <= 1:
            raise InputError(f"{option('min_mass')} must be a share of the row's mass in (0, 1], not {min_mass!r}")
        min_mass = float(min_mass)
    from headdb.parse import check_processes  # spaCy itself loads only for text

    check_processes(parse_processes)
    if dense and (min_mass is not None):
        raise InputError(f"{flag('dense')} keeps every key; it cannot be combined with {option('min_mass')}")
    from headdb.store import WEIGHT_BITS

    if weight_bits not in WEIGHT_BITS:
        raise InputError(f"{option('weight_bits')} must be 32 or 16, not {weight_bits!r}")
    if dense and weight_bits != 32:
        raise InputError(f"{flag('dense')} stores float32 weights (a dense run reproduces the attention exactly); "
                         f"{option('weight_bits')} 16 is for sparse runs")
    sparsity = Sparsity(None, None) if dense else Sparsity(DEFAULT_TOP_K if top_k is None else top_k, min_mass)
    corpus_path = Path(corpus) if corpus is not None else sample_corpus()
    _check_store_path(db)
    check_file(corpus_path)
    _check_not_a_store(corpus_path)
    fmt = infer_format(corpus_path, format)
    if fmt == "conllu" and parser is not None:  # it was ignored: the gold syntax was stored all the same
        raise InputError(f"{option('parser')} parses raw text (text and TSV corpora); a CoNLL-U corpus brings its "
                         "own syntax, which is stored as it is", corpus_path)
    check_writable(db)  # a locked database fails before the corpus is read and the model loaded
    # 1. read the whole corpus once before anything is written: bad input fails here
    n_total, stats = validate(corpus_path, fmt, pairs)
    if limit is not None:
        n_total = min(n_total, limit)
    sha = file_sha256(corpus_path)
    from headdb.resources import default_model

    model_name = str(model) if model is not None else default_model()  # a local folder may come as a Path
    settings = {"corpus_sha256": sha, "format": fmt, "pairs": pairs, "dtype": dtype, "truncate": truncate,
                "top_k": sparsity.top_k, "min_mass": sparsity.min_mass, "limit": limit, "batch_size": batch_size,
                "window": _window_batches(device)}
    if weight_bits != 32:  # absent for 32: the fingerprints of earlier runs stay valid
        settings["weight_bits"] = weight_bits
    if not new_run:
        finished = _finished_run(db, settings, fmt, parser, model_name, max_length, device, run_name, stats)
        if finished is not None:
            return finished
    # 2. the parser and the model, so that their errors also come before any write; the
    # parser's worker processes load their pipelines while the model loads
    spacy_parser = None
    parser_desc = "gold"
    if fmt != "conllu":
        from headdb.parse import DEFAULT_PIPELINE, SpacyParser, legacy_description

        from headdb.corpus import RAW_BATCH_LINES
        from headdb.parse import default_processes, useful_processes

        processes = parse_processes
        if processes is None and n_total < PARALLEL_PARSE_MIN_SENTENCES:
            processes = 1  # a worker's start (about 1 s of a core) would cost more than it saves
        # no more than can get texts: --parse-processes 64 started 63 workers (about 9 GiB), of
        # which at most 15 were ever given any
        columns = 2 if fmt == "tsv" else 1
        processes = useful_processes(default_processes() if processes is None else processes,
                                     min(n_total, RAW_BATCH_LINES) * columns)
        # on a CPU the workers parse ahead in the model's idle time only; a GPU leaves cores free
        spacy_parser = SpacyParser(parser or DEFAULT_PIPELINE, processes=processes,
                                   background=not str(device).startswith("cuda"))
        parser_desc = spacy_parser.description
        legacy_parser_desc = legacy_description(spacy_parser.name, parser_desc)
    else:
        legacy_parser_desc = None
    try:
        return _ingest_loaded(db, corpus_path, fmt, pairs, n_total, stats, sha, spacy_parser, parser_desc,
                              legacy_parser_desc, settings,
                              model_name=model_name, sparsity=sparsity, truncate=truncate, max_length=max_length,
                              limit=limit, batch_size=batch_size, device=device, dtype=dtype, run_name=run_name,
                              download=download, new_run=new_run, progress=progress, weight_bits=weight_bits)
    finally:
        if spacy_parser is not None:
            spacy_parser.close()


def _full_settings(settings: dict[str, Any], parser_desc: str, model_hash: str, max_length: int) -> dict[str, Any]:
    """What a run's fingerprint hashes: ``settings`` and what the parser and the model add."""
    return settings | {"parser": parser_desc, "model_hash": model_hash, "max_length": max_length}


def _finished_run(db, settings: dict[str, Any], fmt: str, parser: str | None, model_name: str,
                  max_length: int | None, device: str, run_name: str | None, stats: ReadStats) -> IngestResult | None:
    """The finished run that these settings would resume, found before the model and the parser
    load (a re-run took 5-10 s to say "already complete"); None where there is none or where the
    model's and the parser's part of the fingerprint cannot be told from their files alone (the
    ingest then finds the run after loading them, as before)."""
    from headdb.model import peek

    if str(db) == ":memory:" or not Path(db).exists():
        return None
    legacy_parser_desc = None
    if fmt == "conllu":
        parser_desc = "gold"
    else:
        from headdb.parse import DEFAULT_PIPELINE, legacy_description, peek_description

        parser_desc = peek_description(parser or DEFAULT_PIPELINE)
        legacy_parser_desc = legacy_description(parser or DEFAULT_PIPELINE, parser_desc)
    peeked = peek(model_name, max_length)
    if parser_desc is None or peeked is None:
        return None
    model_hash, model_max_length, tokenizer_hash, config_hash = peeked
    key = _RunKey(settings, parser_desc, model_hash, model_max_length, tokenizer_hash, config_hash, model_name,
                  legacy_parser_desc)
    try:
        con = connect(db, read_only=True)
    except HeaddbError:  # an older schema: the ingest upgrades it
        return None
    try:
        row = key.find(con, device, run_name)
    finally:
        con.close()
    if row is None or row[1] != "done":
        return None
    return IngestResult(row[0], row[2], False, True, read_stats=stats)


def _ingest_loaded(db, corpus_path: Path, fmt: str, pairs: bool, n_total: int, stats, sha: str, spacy_parser,
                   parser_desc: str, legacy_parser_desc: str | None, settings: dict[str, Any], *, model_name: str,
                   sparsity: Sparsity,
                   truncate: bool, max_length: int | None, limit: int | None, batch_size: int, device: str,
                   dtype: str, run_name: str | None, download: bool, new_run: bool, progress,
                   weight_bits: int) -> IngestResult:
    """:func:`ingest` once its input is validated and its parser loaded: the model and the run.
    ``settings``: the run's fingerprint settings that need neither the model nor the parser."""
    import time

    from headdb.model import AttentionModel

    am = AttentionModel(model_name, device=device, dtype=dtype, download=download, max_length=max_length)
    paired = pairs or fmt == "tsv"  # a TSV file holds pairs by itself; runs.pairs says whether the inputs are pairs
    if paired:
        am.check_pairs_fit()
    if spacy_parser is not None:
        spacy_parser.wait_ready()  # the parser's workers have loaded while the model did; the clock starts later
    key = _RunKey(settings, parser_desc, am.model_hash, am.max_length, am.tokenizer_hash, am.config_hash,
                  am.folder, legacy_parser_desc)
    con = connect(db)
    overlapped = _overlap_writes(am)
    threads = _append_threads(am, overlapped)
    con.execute("SET threads = ?", [threads])
    con.execute("SET memory_limit = ?", [f"{_memory_limit_mb(threads, str(am.device).startswith('cuda'))}MiB"])
    try:
        run_id, resumed, done, other_model_files = _start_run(
            con, key, new_run, run_name, corpus_path, sha, fmt, paired, parser_desc, am, sparsity,
            truncate, limit, batch_size, device, dtype, weight_bits)
        name = f"run-{run_id}"  # until read: what an interrupt right here reports
        try:
            name = con.execute("SELECT run_name FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
            result = IngestResult(run_id, name, resumed, done, read_stats=stats, append_threads=threads,
                                  pairs=paired,
                                  no_special_tokens=am.tokenizer.num_special_tokens_to_add(pair=False) == 0,
                                  unnamed_specials=getattr(am, "unnamed_specials", None),
                                  other_model_files=other_model_files)
            if done:
                return result
            corpus_id = con.execute("SELECT corpus_id FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
            finished = {r[0] for r in con.execute("SELECT sentence_id FROM run_sentences WHERE run_id = ?", [run_id]).fetchall()}
            started = time.perf_counter()
            result.kept_before = len(finished)
            bar = _progress(progress, n_total, len(finished))
            read_ahead = _read_ahead(am)
            # Where nothing of the corpus's sentences or of the run is stored yet, the writer's
            # INSERTs need not look for stored keys (INSERT OR IGNORE cost 0.09 s of the EWT ingest)
            new_sentences = not con.execute(
                "SELECT EXISTS (SELECT 1 FROM sentences WHERE corpus_id = $c) OR EXISTS (SELECT 1 FROM words WHERE corpus_id = $c)",
                {"c": corpus_id}).fetchone()[0]
            nothing_stored = not finished and not con.execute(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE run_id = ?)", [run_id]).fetchone()[0]
            writer = _Writer(con, run_id, corpus_id, result, threaded=overlapped, writers=_writers(am, overlapped),
                             weight_bits=weight_bits, new_sentences=new_sentences, new_run=nothing_stored)
            switch = _SwitchInterval(GIL_SWITCH_US if overlapped or read_ahead else None)  # restored below
            heap = _FrozenHeap(FREEZE_HEAP)  # after the model and the parser are loaded; restored below
            pending: list[tuple[list, BatchEdges | None]] = []  # computed, not yet handed to the writer
            pending_edges = 0
            windows = None
            try:
                stream = read_corpus(corpus_path, fmt, pairs=pairs, parser=spacy_parser, stats=ReadStats())
                if limit is not None:
                    stream = islice(stream, limit)
                windows = _encoded_windows(stream, am, truncate, batch_size, finished, result.timings)
                if read_ahead:
                    windows = _ahead(windows, result.timings)
                for encoded in windows:
                    for i in range(0, len(encoded), batch_size):
                        batch = encoded[i : i + batch_size]
                        if all(e.sentence.sentence_id in finished for e in batch):
                            continue
                        edges = _batch_edges(am, batch, sparsity, result.timings, weight_bits)
                        pending.append((batch, edges))
                        pending_edges += len(edges) if edges is not None else 0
                        if pending_edges >= COMMIT_EDGES:
                            writer.put(pending)
                            pending, pending_edges = [], 0
                        bar(len(batch))
                if pending:
                    writer.put(pending)
                writer.close()
            except BaseException as exc:
                kept, marked = None, False
                try:
                    if windows is not None:
                        windows.close()  # stops a reading thread
                    writer.close(abort=True)
                    marked = _fail(con, run_id, exc)
                    kept = _kept(con, run_id)
                except KeyboardInterrupt:  # a second Ctrl-C during the clean-up: still this run's interrupt
                    raise IngestInterrupted(run_id, name, None, paired) from exc
                if interrupted(exc):  # Ctrl-C, also during a DuckDB statement
                    raise IngestInterrupted(run_id, name, kept, paired) from exc
                _raise_write_error(db, run_id, exc, marked, kept, new_run, "pair" if paired else "sentence")
                raise
            finally:
                switch.restore()
                heap.restore()
                bar(None)
            result.seconds = time.perf_counter() - started
            if am._host_buffers is not None:
                result.pinned_bytes = am._host_buffers.alloc_bytes
            con.execute("UPDATE runs SET status = 'done', finished_at = current_timestamp, error = NULL WHERE run_id = ?",
                        [run_id])
            return result
        except KeyboardInterrupt as exc:  # Ctrl-C outside the batches (the set-up, the final UPDATE)
            if isinstance(exc, IngestInterrupted):
                raise
            raise IngestInterrupted(run_id, name, None, paired) from exc
    finally:
        con.close()


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + seconds


def _batch_edges(am, batch: list, sparsity: Sparsity, timings: dict[str, float],
                 weight_bits: int = 32) -> BatchEdges | None:
    """The model's kept edges of a batch as flat arrays (``sentence`` holds corpus sentence ids;
    skipped inputs have none), selected on the model's device (``AttentionModel.forward_edges``)."""
    live = [e for e in batch if e.status != "skipped"]
    if not live:
        return None
    try:
        return am.forward_edges(live, sparsity.top_k, sparsity.min_mass, timings,
                                ids=np.array([e.sentence.sentence_id for e in live], dtype=np.int32),
                                weight_bits=weight_bits)
    except HeaddbError:
        raise
    except Exception as exc:  # the model's own failure (torch): one line, naming where it happened
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        line = live[0].sentence.segments[0].line
        raise ModelError(f"{am.name}: the model failed on a batch of {len(live)} inputs, the first at line {line} "
                         f"of the corpus: {type(exc).__name__}: {first} (the run is marked failed; the batches "
                         "before it are kept)") from exc


def _write(con, run_id: int, corpus_id: int, parts: list[tuple[list, BatchEdges | None]],
           result: IngestResult, weight_bits: int = 32, new_sentences: bool = False, new_run: bool = False) -> None:
    """Commit ``parts`` (batches with their edges) in one transaction and count them
    (``new_sentences``, ``new_run``: see ``store.write_batches``)."""
    from headdb import store

    result.edges += store.write_batches(con, run_id, corpus_id, parts, result.timings, weight_bits=weight_bits,
                                        new_sentences=new_sentences, new_run=new_run)
    for _, edges in parts:  # stored: their host buffers may be reused (a GPU's page-locked memory)
        if edges is not None and edges.release is not None:
            edges.release()
    for batch, _ in parts:
        for e in batch:
            if e.status == "skipped":
                result.skipped += 1
            else:
                result.sentences += 1
                result.truncated += e.status == "truncated"
                result.special_in_words += e.special_in_words
                if e.status == "ok":
                    n_words = sum(len(seg.words) for seg in e.sentence.segments)
                    result.pieceless_words += n_words - len({w for w in e.word_pos if w is not None})


#: DuckDB's memory limit while ingesting, in MiB per append thread (at least 256 MiB). DuckDB keeps
#: the blocks it has just written cached up to its limit (80% of RAM by default), so without one
#: an ingest's memory grew with the store (1,261 MiB peak RSS for 8,000 sentences against 880 for
#: 2,001); with it the cache stays within the limit and the peak stops growing
#: (docs/benchmarks.md). An ingest reads nothing back but the primary-key indexes.
#: On a GPU a commit is a batch of hundreds of inputs (5-20 M edges), and DuckDB's parallel append
#: holds each thread's row groups until they are merged in order: with 48 MiB a thread (768 MiB at
#: 16 threads) an H200 box wrote bert-base's edges half as fast as with 1 GiB a thread (1.61
#: against 0.85 s for 2,001 EWT sentences, docs/benchmarks.md), so CUDA ingests get 1 GiB a thread.
GPU_MEMORY_MB_PER_THREAD = 1024
MEMORY_MB_PER_THREAD = 48
MEMORY_MB_MIN = 256


def _memory_limit_mb(threads: int, cuda: bool = False) -> int:
    return max(MEMORY_MB_MIN, (GPU_MEMORY_MB_PER_THREAD if cuda else MEMORY_MB_PER_THREAD) * threads)


#: DuckDB threads while ingesting; None decides by the device (see _append_threads).
APPEND_THREADS: int | None = None
#: Overlap DuckDB writes with the model: None decides by the machine (see _overlap_writes).
OVERLAP_WRITES: bool | None = None


def _append_threads(am, overlapped: bool) -> int:
    """DuckDB threads for the appends (``APPEND_THREADS`` overrides): every core, up to 16, when
    the model waits for the write (a CPU ingest commits between batches, so torch is idle then)
    or leaves the cores free (a GPU); the cores torch does not use when a writer thread overlaps
    the model on a CPU. Parallel appends compress as well as one thread as long as each commit's
    edges are one contiguous Arrow table (store.write_batches). Measured on 2 cores: 19 M EWT
    edges in 2 M-edge commits took 2.2 s with one thread and 1.2 s with two; an H200 box appended
    5.8 M edges/s with 1 thread and 10.3 M/s with 4 (docs/benchmarks.md)."""
    if APPEND_THREADS is not None:
        return APPEND_THREADS
    cores = os.cpu_count() or 1
    if overlapped and not str(am.device).startswith("cuda"):
        return max(1, cores - am.torch.get_num_threads())
    return max(1, min(cores, 16))


def _overlap_writes(am) -> bool:
    """A writer thread pays off when the model leaves a core free: on a GPU, or when torch uses
    fewer threads than there are cores. On a CPU that torch already saturates, a second busy
    thread only slows the model's threads down (measured in benchmarks/, docs/benchmarks.md)."""
    if OVERLAP_WRITES is not None:
        return OVERLAP_WRITES
    if str(am.device).startswith("cuda"):
        return True
    return (os.cpu_count() or 1) > am.torch.get_num_threads()


#: Python's thread switch interval, in microseconds, while an ingest runs writer or reading
#: threads (None or 0: Python's own, 5,000). DuckDB's Python client takes the GIL back again and
#: again while a query runs, and each time waits until the thread holding it lets go, up to a
#: switch interval (measured; whatever the reason inside DuckDB). Beside a thread running
#: Python, headdb's edge append took 1.8-2.3x as long at 5 ms, 1.1-1.2x at 200 us and 1.0x at
#: 50 us (benchmarks/gil.py: 2 cores, and an H200 box with 16 DuckDB threads). An ingest has
#: such threads (the reading thread, the model's loop): bert-base on 10,005 EWT sentences on the
#: H200 box, one process, alternating, 1,836-2,272 sentences/s at 5 ms, 2,128-2,240 at 200 us,
#: 2,281-2,528 at 50 us (docs/benchmarks.md). Set for the ingest's duration and then restored;
#: the setting is the process's, so other threads of a host program switch more often meanwhile.
GIL_SWITCH_US: int | None = 50


class _ProcessSetting:
    """A setting of the whole process held while ingests run (:meth:`restore` at the end).

    Ingests that overlap in one process (threads of a host program) share it: the first to
    start saves the process's own state, later ones join in, and the last to finish puts it
    back, in whatever order they finish. Subclasses have their own ``_lock`` and ``_active``."""

    _lock: threading.Lock
    _active: int

    def __init__(self, on: bool):
        self._joined = bool(on)
        if not self._joined:
            return
        cls = type(self)
        with cls._lock:
            self._join(first=cls._active == 0)
            cls._active += 1

    def _join(self, first: bool) -> None:
        raise NotImplementedError

    @classmethod
    def _undo(cls) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        if not self._joined:
            return
        self._joined = False
        cls = type(self)
        with cls._lock:
            cls._active -= 1
            if cls._active == 0:
                cls._undo()


class _SwitchInterval(_ProcessSetting):
    """sys.setswitchinterval(``us`` microseconds) until :meth:`restore` (None or 0: no change)."""

    _lock = threading.Lock()
    _active = 0
    _saved: float | None = None

    def __init__(self, us: int | None):
        self._us = us
        super().__init__(bool(us))

    def _join(self, first: bool) -> None:
        cls = type(self)
        if first:
            cls._saved = sys.getswitchinterval()
        sys.setswitchinterval(min(self._us / 1e6, cls._saved))

    @classmethod
    def _undo(cls) -> None:
        if cls._saved is not None:
            sys.setswitchinterval(cls._saved)
            cls._saved = None


#: Hide the objects alive when an ingest starts (torch, transformers, the model and the parser)
#: from Python's garbage collector until it ends (``gc.freeze``). Reading a corpus makes objects
#: that outlive the collector's young generations, so every few thousand sentences it runs a
#: full collection, which traversed all of those objects: about 0.2 s each. On 8,004 EWT
#: sentences two full collections took 0.41 s of the ingest, and 0.015 s with the objects
#: frozen (docs/benchmarks.md). False: leave the collector alone.
FREEZE_HEAP = True


class _FrozenHeap(_ProcessSetting):
    """``gc.freeze()`` until :meth:`restore`, then ``gc.unfreeze()``; only where the host program
    has frozen no objects itself (unfreezing would take its objects back as well)."""

    _lock = threading.Lock()
    _active = 0
    _ours = False

    def _join(self, first: bool) -> None:
        import gc

        cls = type(self)
        if first:
            cls._ours = gc.get_freeze_count() == 0
            if cls._ours:
                gc.freeze()

    @classmethod
    def _undo(cls) -> None:
        import gc

        if cls._ours:
            gc.unfreeze()
            cls._ours = False


#: Writer threads on a GPU, each committing whole groups on its own connection (None: decided
#: by the device, see _writers). More than one lets commits overlap, so DuckDB's serial parts
#: of an append (its commit) run beside another group's parallel part.
WRITERS: int | None = None


def _writers(am, overlapped: bool) -> int:
    if WRITERS is not None:
        return max(1, WRITERS)
    if not overlapped:
        return 1
    return GPU_WRITERS if str(am.device).startswith("cuda") else 1


#: writer threads on CUDA: on an H200 box, bert-base on 10,005 sentences ran at 1,220 sentences/s
#: with two (the model waited 0.9 s for them) against 1,093 with one (3.7 s), though the one-writer
#: run already had its page-locked buffers (benchmarks/gpu.py variants, docs/benchmarks.md)
GPU_WRITERS = 2


class _Writer:
    """Commits groups of batches on threads of their own so that DuckDB's work overlaps the model's.

    A FIFO queue and ``writers`` threads, each with its own cursor: every group commits in its
    own transaction, all of it or none. With one thread the groups commit in the order they were
    computed; with several they may finish out of order, which changes the order of rows in the
    tables but not what is stored, nor what a resume skips (it skips the batches whose
    sentences all committed; each group holds whole batches). The queue is short, which bounds
    memory: the model waits when the writers are behind (counted as ``write_wait``).
    """

    def __init__(self, con, run_id: int, corpus_id: int, result: IngestResult, depth: int | None = None,
                 threaded: bool = True, writers: int = 1, weight_bits: int = 32, new_sentences: bool = False,
                 new_run: bool = False):
        self._con = con
        self._args = (run_id, corpus_id)
        self._options = {"weight_bits": weight_bits, "new_sentences": new_sentences, "new_run": new_run}
        self._result = result
        self._lock = threading.Lock()  # result's counters and timings
        self._queue: queue.Queue = queue.Queue(maxsize=(WRITE_DEPTH if depth is None else depth) + writers - 1)
        self._error: BaseException | None = None
        self._abort = False
        self._threads: list[threading.Thread] = []
        if threaded:
            for i in range(writers):
                # each thread its own handle on the same database
                t = threading.Thread(target=self._loop, args=(con.cursor(),), name=f"headdb-writer-{i}", daemon=True)
                self._threads.append(t)
                t.start()

    def _loop(self, cursor) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if self._error is not None or self._abort:
                    continue  # drain without writing: the run has failed
                try:
                    self._write(cursor, item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                    self._error = self._error or exc
        finally:
            cursor.close()

    def _write(self, con, parts) -> None:
        part = IngestResult(0, "", False, False)  # this group's counts, added under the lock
        _write(con, *self._args, parts, part, **self._options)
        with self._lock:
            r = self._result
            r.edges += part.edges
            r.sentences += part.sentences
            r.skipped += part.skipped
            r.truncated += part.truncated
            r.pieceless_words += part.pieceless_words
            r.special_in_words += part.special_in_words
            for k, v in part.timings.items():
                _add(r.timings, k, v)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, parts: list[tuple[list, BatchEdges | None]]) -> None:
        """Commit ``parts`` (batches with their edges) in one transaction, now or on a thread."""
        if not self._threads:
            _write(self._con, *self._args, parts, self._result, **self._options)
            return
        self._check()
        t0 = time.perf_counter()
        self._queue.put(parts)
        _add(self._result.timings, "write_wait", time.perf_counter() - t0)

    def close(self, abort: bool = False) -> None:
        """Wait for every queued group to commit (``abort``: only for those being written)."""
        if not self._threads:
            return
        self._abort = abort
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        if not abort:
            self._check()


def _whole(name: str, value, optional: bool = True) -> int | None:
    """An option that is a whole number (numpy's integers too) as an int; None where optional."""
    import numbers

    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{option(name)} must be a whole number, not {value!r}")
    return int(value)


def check_run_name(name) -> None:
    """A run name is one line of text, not empty, not only digits (``--run 7`` means run id 7),
    without a space at either end, not starting with ``-`` (``headdb drop DB -1`` reads it as an
    option)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{option('run_name')} must be a non-empty text, not {name!r}")
    if name.strip().isdigit():
        raise InputError(f"{option('run_name')} {name!r} is only digits, which `--run` reads as a run id; add a letter")
    if any(ch in name for ch in "\r\n\t") or not name.isprintable():
        raise InputError(f"{option('run_name')} {name!r} must be one line of printable text")
    if name != name.strip():  # ` base` was stored so, and `--run base` then found no run
        raise InputError(f"{option('run_name')} {name!r} begins or ends with a space; `--run` finds a run by "
                         "its exact name")
    if name.startswith("-"):  # `headdb drop DB -1` said "No such option: -1"
        raise InputError(f"{option('run_name')} {name!r} begins with '-', which the command line reads as an "
                         "option where a run is named (`headdb drop DB RUN`); begin it with a letter or digit")


def model_files_changed(changed: str, folder: str | Path | None = None) -> str:
    """The files that ``changed`` ("tokenizer", "config", "tokenizer and config", as
    :meth:`_RunKey.other_model_files` says) names: of ``folder``, with the tokenizer's file names,
    or of "the model folder" in short."""
    tokenizer = "tokenizer files"
    if folder is not None:
        tokenizer += " (tokenizer.json, vocab.txt, tokenizer_config.json, ...)"
    files = {"tokenizer": tokenizer, "config": "config.json",
             "tokenizer and config": tokenizer + " and config.json"}[changed]  # text, not SQL
    return f"the model folder's {files}" if folder is None else f"the {files} of {folder}"


#: The latest run with one of the fingerprints, on a device, of a name where one is given (a run
#: to resume or one that is complete): run_id, status, run_name
_SAME_RUN_SQL = ("SELECT run_id, status, run_name FROM runs WHERE list_contains(?::VARCHAR[], fingerprint) "
                 "AND device = ? AND (run_name = ? OR ? IS NULL) ORDER BY run_id DESC LIMIT 1")
#: Whether a run of an earlier version (a fingerprint without the tokenizer's and config's part) on the device
#: (of the name) of the corpus holds another weight hash: one it may have hashed from these weights
_OLDER_HASH_SQL = ("SELECT EXISTS (SELECT 1 FROM runs WHERE device = ? AND (run_name = ? OR ? IS NULL) "
                   "AND corpus_sha256 = ? AND model_hash <> ? AND NOT contains(fingerprint, '.'))")
#: The latest run whose fingerprint has these settings and another tokenizer or config: run_id,
#: status, run_name, fingerprint
_OTHER_MODEL_FILES_SQL = ("SELECT run_id, status, run_name, fingerprint FROM runs WHERE starts_with(fingerprint, ?) "
                          "AND fingerprint <> ? AND device = ? AND (run_name = ? OR ? IS NULL) "
                          "ORDER BY run_id DESC LIMIT 1")


def _start_run(con, key: _RunKey, new_run, run_name, corpus_path, sha, fmt, pairs, parser_desc, am, sparsity,
               truncate, limit, batch_size, device, dtype, weight_bits=32
               ) -> tuple[int, bool, bool, tuple[int, str, str, str] | None]:
    """(run_id, resumed, already done, the run of these settings with another tokenizer or config
    that a new run was started beside: run_id, status, run_name, what changed, or None)."""
    other = None
    with transaction(con):
        if not new_run:
            prev = key.find(con, device, run_name)
            if prev is not None:
                if prev[1] == "done":
                    return prev[0], False, True, None
                con.execute("UPDATE runs SET status = 'running', error = NULL WHERE run_id = ?", [prev[0]])
                return prev[0], True, False, None
            other = key.other_model_files(con, device, run_name)
            if other is not None and run_name is not None:
                raise InputError(
                    f"run name {run_name!r} is taken by run {other[0]}, which has these settings but another "
                    f"{other[3]}: {model_files_changed(other[3], am.folder)} changed since it was ingested, so it is "
                    "not " + ("the same run" if other[1] == "done" else
                              "resumed (its inputs were computed with the other files)")
                    + f"; choose another name for a run with this {other[3]}"
                    + ("" if other[1] == "done" else ", or put the files back to resume it"))
        if run_name is not None:
            taken = con.execute("SELECT min(run_id) FROM runs WHERE run_name = ?", [run_name]).fetchone()[0]
            if taken is not None:
                raise InputError(f"run name {run_name!r} is taken by run {taken}; choose another"
                                 + ("" if new_run else " (that run has other settings, so it is not resumed)"))
        # after the run lookup: a resumed run keeps its corpus (an earlier version's run of a pipeline
        # folder has its corpus under the folder's description of then)
        row = con.execute(
            "SELECT corpus_id FROM corpora WHERE sha256 = ? AND format = ? AND pairs = ? AND parser = ?",
            [sha, fmt, pairs, parser_desc]).fetchone()
        if row is None:
            row = con.execute(
                "INSERT INTO corpora (path, sha256, format, pairs, parser) VALUES (?, ?, ?, ?, ?) RETURNING corpus_id",
                [str(corpus_path.resolve()), sha, fmt, pairs, parser_desc]).fetchone()
        corpus_id = row[0]
        versions = json.loads(am.versions())
        import duckdb

        versions["duckdb"] = duckdb.__version__
        versions["headdb"] = __version__
        row = con.execute(
            """
            INSERT INTO runs (run_name, fingerprint, corpus_id, corpus_path, corpus_sha256, corpus_format, pairs,
                              model, model_hash, model_type, tokenizer, n_layers, n_heads, dtype,
                              attn_implementation, device, max_length, truncate, top_k, min_mass, dense,
                              sentence_limit, batch_size, headdb_version, library_versions, weight_bits)
            VALUES (coalesce(?, 'run'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            RETURNING run_id
            """,
            [run_name, key.fingerprint, corpus_id, str(corpus_path.resolve()), sha, fmt, pairs, am.source, am.model_hash,
             am.model_type, am.tokenizer_name, am.n_layers, am.n_heads, dtype, am.attn_implementation, device,
             am.max_length, truncate, sparsity.top_k, sparsity.min_mass, sparsity.dense, limit, batch_size,
             __version__, json.dumps(versions, sort_keys=True), weight_bits]).fetchone()
        run_id = row[0]
        if run_name is None:  # run-ID, unless a run was named so by hand: then run-ID-2, ...
            name, k = f"run-{run_id}", 2
            while con.execute("SELECT 1 FROM runs WHERE run_name = ?", [name]).fetchone() is not None:
                name, k = f"run-{run_id}-{k}", k + 1
            con.execute("UPDATE runs SET run_name = ? WHERE run_id = ?", [name, run_id])
    return run_id, False, False, other


def _argument_order() -> str:
    return "`headdb ingest DB CORPUS`" if CLI_NAMES.get() else "ingest(db, corpus)"


def _check_store_path(db: str | Path) -> None:
    """The store comes first: ``headdb ingest corpus.conllu`` (the store left out) or the two
    swapped, where that file did not exist, created a store named corpus.conllu holding the
    bundled sample, and said only what it stored."""
    from headdb.db import check_store_arg

    check_store_arg(db)
    if str(db) != ":memory:" and not Path(db).exists() and has_corpus_extension(db):
        raise InputError(f"no such store, and its name is a corpus file's ({Path(db).suffix}): the store comes "
                         f"first, then the corpus ({_argument_order()}); name a new store .db", db)


def _check_not_a_store(corpus: Path) -> None:
    """A DuckDB file given as the corpus (the arguments swapped) is named as one: it read "cannot
    infer the format from the extension '.db'", or, with --format, "NUL byte in the file"."""
    from headdb.db import is_duckdb_file

    if is_duckdb_file(corpus):
        raise InputError(f"is a DuckDB database, not a corpus: the store comes first, then the corpus "
                         f"({_argument_order()})", corpus)


def _fail(con, run_id: int, exc: BaseException) -> bool:
    """Mark the run failed, or interrupted after Ctrl-C or SIGTERM (it stays resumable either
    way); never hide the original error. Whether the mark was written (on a full disk it may not be)."""
    stopped = interrupted(exc)
    message = "interrupted" if stopped else (str(exc).splitlines() or [type(exc).__name__])[0]
    try:
        con.execute("UPDATE runs SET status = ?, error = ? WHERE run_id = ?",
                    ["interrupted" if stopped else "failed", message[:500], run_id])
        return True
    except Exception:  # noqa: BLE001 - the database may be what failed
        return False


def again(new_run: bool) -> str:
    """How to resume a run: a command that asked for a new run would start yet another one."""
    return f"run the same command again without {flag('new_run')}" if new_run else "run the same command again"


def _kept(con, run_id: int) -> int | None:
    """The run's committed sentences (None where the database cannot say)."""
    try:
        return con.execute("SELECT count(*) FROM run_sentences WHERE run_id = ?", [run_id]).fetchone()[0]
    except Exception:  # noqa: BLE001 - the database may be what failed
        return None


def _raise_write_error(db, run_id: int, exc: BaseException, marked: bool = True, kept: int | None = None,
                       new_run: bool = False, unit: str = "sentence") -> None:
    """A DuckDB error while writing (a full disk, say) becomes one clear line for the CLI, which
    says what the store holds (a full disk may refuse even the mark of the failure), counting
    ``unit``s (pairs in a run of pairs, as the finished ingest's line does)."""
    import duckdb

    if isinstance(exc, duckdb.Error):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        held = ("the batches written before are kept" if kept is None else
                f"no {unit} was committed" if kept == 0 else
                f"its {kept:,} committed {unit}{' is' if kept == 1 else 's are'} kept")
        state = "the run is marked failed" if marked else "the run could not be marked failed (it shows as interrupted)"
        raise DatabaseError(
            f"{db}: writing run {run_id} failed: {first}; {held} and {state}: {again(new_run)} to resume it"
        ) from exc


def _progress(progress, total: int, already: int) -> Callable[[int | None], None]:
    if callable(progress):
        return lambda n: progress(n) if n is not None else None
    if not progress:
        return lambda n: None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} sentences/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=_stderr_console(), transient=False)
    task = bar.add_task("ingest", total=total, completed=already, rate="-")
    bar.start()
    import time

    t0 = time.perf_counter()
    done = [0]

    def update(n: int | None) -> None:
        if n is None:
            bar.stop()
            return
        done[0] += n
        rate = done[0] / max(time.perf_counter() - t0, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:,.0f}")

    return update


def _stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)


__all__ = ["ingest", "IngestResult"]
