"""Reads and writes of the attention store tables (bulk Arrow inserts, one transaction a batch)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from headdb.corpus import Sentence
from headdb.db import connect, registered, transaction
from headdb.errors import DatabaseError, InputError, shell_word, yes_no
from headdb.sparsify import BatchEdges, SentenceEdges

#: the edge columns handed to DuckDB; run_id, the same for every row, is a constant of the INSERT
EDGE_SCHEMA = pa.schema([
    ("sentence_id", pa.int32()), ("layer", pa.int16()), ("head", pa.int16()),
    ("query_pos", pa.int16()), ("key_pos", pa.int16()), ("weight", pa.float32()),
])
#: how a run may store its weights: 32 (FLOAT, as the model computed them, in edge_store) or 16
#: (fixed point, floor(weight * WEIGHT16_SCALE) in edge_store16.weight16; the edges view reads
#: both tables, each weight as a FLOAT)
WEIGHT_BITS = (32, 16)
WEIGHT16_SCALE = 65535
#: the edge columns of a 16-bit run: weight16 = floor(weight * WEIGHT16_SCALE), as edge_store16 holds it
EDGE16_SCHEMA = pa.schema([*(EDGE_SCHEMA.field(i) for i in range(5)), ("weight16", pa.uint16())])


def weight16(weight: np.ndarray) -> np.ndarray:
    """Weights as a 16-bit run stores them: ``floor(weight * 65535)`` as uint16, rounded down so
    that what is read back never exceeds what the model computed. The arithmetic of
    :data:`WEIGHT16_SQL` in float64, so the same numbers for every weight in [0, 1]
    (tests/test_weight_bits.py); a GPU ingest does the same on the device."""
    scaled = np.floor(np.asarray(weight, dtype=np.float64) * WEIGHT16_SCALE)
    return np.clip(scaled, 0, WEIGHT16_SCALE).astype(np.uint16)
#: rows per Arrow record batch of an edge insert (None: one). An option for measurements: batches
#: of 122,880 rows made no difference on 2 cores or on an H200 box (docs/benchmarks.md).
ARROW_CHUNK_ROWS: int | None = None


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, ignore: bool = True) -> None:
    """Append ``data`` to ``table``; with ``ignore`` rows whose key is stored already are left
    out (INSERT OR IGNORE), without it a stored key fails the INSERT."""
    # table names here are constants of this module, never user input
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    insert_sql = "INSERT OR IGNORE" if ignore else "INSERT"
    with registered(con, "_headdb_batch", data):
        con.execute(f'{insert_sql} INTO "{table}" ({cols}) SELECT {cols} FROM _headdb_batch')


def sentence_tables(corpus_id: int, sentences: list[Sentence]) -> tuple[pa.Table, pa.Table]:
    """The sentences and words rows of a batch."""
    srows: dict[str, list[Any]] = {k: [] for k in (
        "corpus_id", "sentence_id", "doc_id", "sent_key", "line", "text_a", "text_b", "n_words_a", "n_words_b")}
    wrows: dict[str, list[Any]] = {k: [] for k in (
        "corpus_id", "sentence_id", "word_pos", "segment", "form", "lemma", "upos", "xpos", "head_word_pos", "deprel")}
    for s in sentences:
        a = s.segments[0]
        b = s.segments[1] if s.is_pair else None
        keys = [seg.sent_key for seg in s.segments if seg.sent_key]
        srows["corpus_id"].append(corpus_id)
        srows["sentence_id"].append(s.sentence_id)
        srows["doc_id"].append(a.doc_id)
        srows["sent_key"].append(" | ".join(keys) if keys else None)
        srows["line"].append(a.line)
        srows["text_a"].append(a.text)
        srows["text_b"].append(b.text if b else None)
        srows["n_words_a"].append(len(a.words))
        srows["n_words_b"].append(len(b.words) if b else None)
        offset = 0
        for seg_index, seg in enumerate(s.segments):
            for i, w in enumerate(seg.words):
                wrows["corpus_id"].append(corpus_id)
                wrows["sentence_id"].append(s.sentence_id)
                wrows["word_pos"].append(offset + i)
                wrows["segment"].append(seg_index)
                wrows["form"].append(w.form)
                wrows["lemma"].append(w.lemma)
                wrows["upos"].append(w.upos)
                wrows["xpos"].append(w.xpos)
                wrows["head_word_pos"].append(None if w.head is None else offset + w.head)
                wrows["deprel"].append(w.deprel)
            offset += len(seg.words)
    stypes = {"corpus_id": pa.int32(), "sentence_id": pa.int32(), "line": pa.int32(),
              "n_words_a": pa.int16(), "n_words_b": pa.int16()}
    wtypes = {"corpus_id": pa.int32(), "sentence_id": pa.int32(), "word_pos": pa.int16(),
              "segment": pa.int8(), "head_word_pos": pa.int16()}
    st = pa.table({k: pa.array(v, type=stypes.get(k, pa.string())) for k, v in srows.items()})
    wt = pa.table({k: pa.array(v, type=wtypes.get(k, pa.string())) for k, v in wrows.items()})
    return st, wt


def edge_table(parts: list[BatchEdges], weight_bits: int = 32) -> pa.Table:
    """The edges rows of batches (``sentence`` holding corpus sentence ids), without run_id, as
    one contiguous Arrow table: the columns of a single part are used as they are (no copy, no
    per-row Python), several are concatenated once.

    Weights rounded to 16 bits already (uint16: a GPU rounds them before they leave it) give an
    :data:`EDGE16_SCHEMA` table (float ones among them rounded here with :func:`weight16`); float
    weights stay float, and :func:`insert_edges` rounds them for a 16-bit run (on a CPU DuckDB
    does that inside the append, with every core)."""
    def joined(arrays: list[np.ndarray]) -> pa.Array:
        return pa.array(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def column(name: str, dtype) -> pa.Array:
        return joined([np.asarray(getattr(e, name), dtype=dtype) for e in parts])

    keys = [column("sentence", np.int32), column("layer", np.int16), column("head", np.int16),
            column("query_pos", np.int16), column("key_pos", np.int16)]
    if any(e.weight.dtype == np.uint16 for e in parts):
        if weight_bits != 16:
            raise ValueError("16-bit weights in a 32-bit run")
        schema = EDGE16_SCHEMA
        weights = joined([e.weight if e.weight.dtype == np.uint16 else weight16(e.weight) for e in parts])
    else:
        schema, weights = EDGE_SCHEMA, column("weight", np.float32)
    table = pa.Table.from_arrays(keys + [weights], schema=schema)
    if ARROW_CHUNK_ROWS and table.num_rows > ARROW_CHUNK_ROWS:
        table = pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_CHUNK_ROWS), schema=schema)
    return table


#: a float32 ``weight`` as edge_store16.weight16 holds it: rounded down, so never above the model's
WEIGHT16_SQL = f"least(floor(weight::DOUBLE * {WEIGHT16_SCALE}), {WEIGHT16_SCALE})::USMALLINT"


def _edges_insert_sql(table: str, weight_cols: str, weight_sql: str) -> str:
    """The edge INSERT for one way of storing weights: into ``table``'s ``weight_cols``, the
    value ``weight_sql``."""
    return (f"INSERT INTO {table} (run_id, sentence_id, layer, head, query_pos, key_pos, {weight_cols}) "
            f"SELECT ?::INTEGER, sentence_id, layer, head, query_pos, key_pos, {weight_sql} FROM _headdb_edges")


_EDGES_INSERT = {
    32: _edges_insert_sql("edge_store", "weight", "weight"),
    16: _edges_insert_sql("edge_store16", "weight16", WEIGHT16_SQL),
    # weights already rounded (:func:`weight16`): DuckDB appends 2 bytes a weight and computes nothing
    "16-rounded": _edges_insert_sql("edge_store16", "weight16", "weight16"),
}


def insert_edges(con: duckdb.DuckDBPyConnection, run_id: int, table: pa.Table, weight_bits: int = 32) -> None:
    """Append an :data:`EDGE_SCHEMA` table to the edges for ``run_id`` (a constant of the
    INSERT), in the caller's transaction: into table ``edge_store``, or with ``weight_bits`` 16
    into ``edge_store16``, each weight rounded down to a multiple of 1 / WEIGHT16_SCALE so that
    what is read back never exceeds what the model computed; an :data:`EDGE16_SCHEMA` table
    comes rounded already."""
    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, not {weight_bits!r}")
    rounded = "weight16" in table.column_names
    if rounded and weight_bits != 16:
        raise ValueError("a table of 16-bit weights goes into a 16-bit run")
    with registered(con, "_headdb_edges", table):
        con.execute(_EDGES_INSERT["16-rounded" if rounded else weight_bits], [run_id])


def batch_tables(run_id: int, corpus_id: int, encoded: list) -> tuple[pa.Table, ...]:
    """The rows one batch adds to sentences, words, tokens and run_sentences."""
    sentences = [e.sentence for e in encoded]
    st, wt = sentence_tables(corpus_id, sentences)
    rs: dict[str, list[Any]] = {
        "sentence_id": [s.sentence_id for s in sentences],
        "n_tokens": [None if e.status == "skipped" else e.length for e in encoded],
        "n_tokens_full": [e.n_tokens_full for e in encoded],
        "status": [e.status for e in encoded],
    }
    live = [e for e in encoded if e.status != "skipped"]
    lengths = np.array([e.length for e in live], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    chain = itertools.chain.from_iterable
    tok: dict[str, Any] = {
        "sentence_id": np.repeat(np.array([e.sentence.sentence_id for e in live], dtype=np.int32), lengths),
        "token_pos": (np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int16),
        "piece": list(chain(e.pieces for e in live)),
        "word_pos": list(chain(e.word_pos for e in live)),
        "segment": list(chain(e.segment for e in live)),
        "special": list(chain(e.special for e in live)),
    }
    tt = pa.table({
        "run_id": pa.array(np.full(len(tok["sentence_id"]), run_id, dtype=np.int32)),
        "sentence_id": pa.array(tok["sentence_id"], pa.int32()),
        "token_pos": pa.array(tok["token_pos"], pa.int16()),
        "piece": pa.array(tok["piece"], pa.string()),
        "word_pos": pa.array(tok["word_pos"], pa.int16()),
        "segment": pa.array(tok["segment"], pa.int8()),
        "special": pa.array(tok["special"], pa.string()),
    })
    rt = pa.table({
        "run_id": pa.array([run_id] * len(rs["sentence_id"]), pa.int32()),
        "sentence_id": pa.array(rs["sentence_id"], pa.int32()),
        "n_tokens": pa.array(rs["n_tokens"], pa.int16()),
        "n_tokens_full": pa.array(rs["n_tokens_full"], pa.int32()),
        "status": pa.array(rs["status"], pa.string()),
    })
    return st, wt, tt, rt


def write_batches(con: duckdb.DuckDBPyConnection, run_id: int, corpus_id: int,
                  parts: list[tuple[list, BatchEdges | list[SentenceEdges | None] | None]],
                  timings: dict[str, float] | None = None, weight_bits: int = 32,
                  new_sentences: bool = False, new_run: bool = False) -> int:
    """Write batches in one transaction: for each ``(encoded, edges)`` of ``parts`` its sentences
    and words (if new to the corpus), tokens, run_sentences and edges (see :func:`batch_tables`;
    weights as :func:`insert_edges` stores them with ``weight_bits``).
    ``new_sentences`` / ``new_run``: the caller knows that none of these sentences (and words) is
    stored for the corpus yet / that nothing of these inputs is stored for the run yet; their
    rows then go in with a plain INSERT, and a row stored after all fails the transaction. By
    default rows already stored are skipped (INSERT OR IGNORE: its look-up of stored keys cost
    0.09 s of the EWT ingest's 36 small-table INSERTs on 2 cores; docs/benchmarks.md).
    ``edges`` is a :class:`BatchEdges` whose ``sentence`` holds corpus sentence ids (as
    ingestion makes them), or one :class:`SentenceEdges` (or None) per input of ``encoded``.
    All of them or none are stored. Returns the number of edges written. ``timings`` (seconds)
    gains ``arrow`` (building the Arrow tables) and ``write`` (the DuckDB transaction).

    One transaction for several batches is cheaper than one each: every INSERT has a fixed cost
    (about 4 ms for the small tables here), and larger appends fill DuckDB's row groups whole
    (docs/benchmarks.md)."""
    t0 = time.perf_counter()
    built = [batch_tables(run_id, corpus_id, encoded) for encoded, _ in parts]
    st, wt, tt, rt = (pa.concat_tables([b[i] for b in built]) for i in range(4))
    edge_parts = []
    for encoded, edges in parts:
        if isinstance(edges, list):
            edges = BatchEdges.from_sentences(edges, [e.sentence.sentence_id for e in encoded])
        if edges is not None and len(edges):
            edge_parts.append(edges)
    # one contiguous table: DuckDB's parallel append then fills whole row groups (with one Arrow
    # chunk per batch, two threads left partly filled ones: 5.7 against 5.0 bytes per edge)
    et = edge_table(edge_parts, weight_bits) if edge_parts else None
    t1 = time.perf_counter()
    with transaction(con):
        _insert(con, "sentences", st, ignore=not new_sentences)
        _insert(con, "words", wt, ignore=not new_sentences)
        _insert(con, "tokens", tt, ignore=not new_run)
        _insert(con, "run_sentences", rt, ignore=not new_run)
        if et is not None:
            insert_edges(con, run_id, et, weight_bits)
    if timings is not None:
        t2 = time.perf_counter()
        timings["arrow"] = timings.get("arrow", 0.0) + (t1 - t0)
        timings["write"] = timings.get("write", 0.0) + (t2 - t1)
    return et.num_rows if et is not None else 0


def runs(db: str | Path) -> pd.DataFrame:
    """Every run with its provenance, status and counts.

    ``tokenizer_hash`` and ``config_hash`` are the hashes of the model folder's tokenizer files
    and of its config.json that the run's fingerprint holds (NULL for runs of headdb's earlier
    versions, which hashed neither).

    ``status`` is done, failed, or interrupted: stopped by Ctrl-C or SIGTERM, or left marked
    running by a killed process (none can be running while this reads the file, since an ingest
    holds the write lock); re-running the same ingest command resumes a failed or interrupted run.
    """
    con = connect(db, read_only=True)
    try:
        return con.execute(
            """
            -- an ingest holds the write lock for as long as it runs, so a run still marked
            -- 'running' while this read-only connection is open was interrupted (killed)
            SELECT r.run_id, r.run_name,
                   CASE WHEN r.status = 'running' THEN 'interrupted' ELSE r.status END AS status, r.model, r.model_hash,
                   -- the fingerprint is SETTINGS.TOKENIZER-CONFIG (ingest._RunKey); earlier versions' is SETTINGS
                   CASE WHEN contains(r.fingerprint, '.')
                        THEN 'sha256:' || split_part(split_part(r.fingerprint, '.', 2), '-', 1) END AS tokenizer_hash,
                   CASE WHEN contains(r.fingerprint, '.')
                        THEN 'sha256:' || split_part(split_part(r.fingerprint, '.', 2), '-', 2) END AS config_hash,
                   r.model_type, r.tokenizer,
                   r.n_layers, r.n_heads, r.dtype, r.attn_implementation, r.device, r.max_length,
                   r.truncate, r.top_k, r.min_mass, r.dense, r.weight_bits, r.corpus_path, r.corpus_sha256,
                   r.corpus_format, r.pairs, r.sentence_limit, r.batch_size, r.headdb_version,
                   r.started_at, r.finished_at, r.error,
                   (SELECT count(*) FROM run_sentences s WHERE s.run_id = r.run_id AND s.status <> 'skipped') AS n_sentences,
                   (SELECT count(*) FROM run_sentences s WHERE s.run_id = r.run_id AND s.status = 'skipped') AS n_skipped,
                   (SELECT count(*) FROM run_sentences s WHERE s.run_id = r.run_id AND s.status = 'truncated') AS n_truncated
            FROM runs r ORDER BY r.run_id
            """
        ).df()
    finally:
        con.close()


def resolve_run(con: duckdb.DuckDBPyConnection, run: int | str | None, *, finished: bool = False) -> int:
    """A run id from an id, a run name, or None (the only or latest finished run). With
    ``finished``, a run whose ingest did not finish is an error, in the words of `headdb runs`
    (a run still marked running, on a store this process could open, was interrupted)."""
    run_id = _resolve_run(con, run)
    if finished:
        status = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
        if status != "done":
            shown = shown_status(status)
            raise DatabaseError(f"run {run_id} is {shown}, not done: its ingest did not finish; run the same "
                                f"`headdb ingest` command again to resume it (or `headdb drop` it)")
    return run_id


def _resolve_run(con: duckdb.DuckDBPyConnection, run: int | str | None) -> int:
    if run is None:
        row = con.execute("SELECT max(run_id) FROM runs WHERE status = 'done'").fetchone()
        if row[0] is None:
            unfinished = con.execute("SELECT run_id, status FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
            if unfinished is None:
                raise DatabaseError(f"{store_name(con)} has no finished run; ingest a corpus first")
            shown = shown_status(unfinished[1])
            raise DatabaseError(f"{store_name(con)} has no finished run: run {unfinished[0]} is {shown}; run its "
                                "`headdb ingest` command again to resume it")
        return int(row[0])
    import numbers

    if isinstance(run, bool) or not isinstance(run, (numbers.Integral, str)):
        raise InputError(f"a run is its id (a whole number) or its name, not {run!r}")
    if isinstance(run, numbers.Integral) or run.isdigit():
        row = con.execute("SELECT run_id FROM runs WHERE run_id = ?", [int(run)]).fetchone()
        if row is None and isinstance(run, str):  # no run with that id: a run may be named so
            row = _by_name(con, run)
    else:
        row = _by_name(con, run)
    if row is None:
        arg = command_store(con)
        # an in-memory store has no path for `headdb runs` ("headdb runs 'the database'" was no command)
        see = f" (see `headdb runs {arg}`)" if arg else ""
        raise DatabaseError(f"no run {run!r} in {store_name(con)}{see}")
    return int(row[0])


def sentence_ranges(con: duckdb.DuckDBPyConnection, run_id: int, limit: int, *,
                    edges: bool = False) -> list[tuple[int, int]]:
    """Consecutive ranges (first, last sentence_id) of a run's sentences, for queries that run
    over a large run in pieces so that DuckDB's hash tables stay one piece's size (scores and
    accuracy). Each range holds at most ``limit`` attention rows (queries x layers x heads), or
    with ``edges`` at most ``limit`` stored edges as the run's settings bound them (a row keeps
    at most min(top_k, n_tokens) keys; every key in a dense run), unless one sentence alone
    exceeds it. One range when the run fits; ``[(0, 0)]`` for a run without sentences."""
    ids, size = (np.asarray(c) for c in con.execute(
        "SELECT s.sentence_id, coalesce(s.n_tokens::BIGINT * r.n_layers * r.n_heads * CASE WHEN $edges "
        "THEN least(coalesce(r.top_k, s.n_tokens), s.n_tokens) ELSE 1 END, 0)::BIGINT "
        "FROM run_sentences s JOIN runs r USING (run_id) WHERE s.run_id = $run ORDER BY s.sentence_id",
        {"run": run_id, "edges": edges}).fetchnumpy().values())
    if len(ids) == 0:
        return [(0, 0)]
    total = np.cumsum(size)
    if total[-1] <= limit:
        return [(int(ids[0]), int(ids[-1]))]
    ranges, first = [], 0
    while first < len(ids):
        # the last sentence that keeps this range within the limit (at least one sentence)
        base = total[first - 1] if first else 0
        last = max(first, int(np.searchsorted(total, base + limit, side="right")) - 1)
        ranges.append((int(ids[first]), int(ids[last])))
        first = last + 1
    return ranges


def shown_status(status: str) -> str:
    """A run's status as `headdb runs` shows it: one left 'running' in a store this process could
    open was interrupted (an ingest holds the write lock while it runs)."""
    return "interrupted" if status == "running" else status


def store_name(con: duckdb.DuckDBPyConnection) -> str:
    """The file of the store that ``con`` opened, for messages ("the database" in memory)."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return row[0] if row and row[0] else _NO_FILE


#: store_name of a store without a file (in memory)
_NO_FILE = "the database"


def command_store(con: duckdb.DuckDBPyConnection) -> str | None:
    """The store as a command to paste names it: its file's path, quoted for a shell where needed;
    None for a store in memory, which has no path to name."""
    where = store_name(con)
    return None if where == _NO_FILE else shell_word(where)


def _by_name(con: duckdb.DuckDBPyConnection, name: str) -> tuple | None:
    rows = con.execute("SELECT run_id FROM runs WHERE run_name = ? ORDER BY run_id", [name]).fetchall()
    if len(rows) > 1:
        raise DatabaseError(f"run name {name!r} is ambiguous (runs {', '.join(str(r[0]) for r in rows)}); pass the id")
    return rows[0] if rows else None


def run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables that hold rows of a run (a ``run_id`` column), ``runs`` last."""
    names = [r[0] for r in con.execute(
        "SELECT c.table_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "ON t.table_name = c.table_name AND t.schema_name = c.schema_name AND t.database_name = c.database_name "
        "WHERE c.database_name = current_database() AND c.schema_name = 'main' AND c.column_name = 'run_id' "
        "AND NOT t.temporary ORDER BY c.table_name").fetchall()]
    return [n for n in names if n != "runs"] + ["runs"]


def drop_run(db: str | Path, run: int | str, *, dry_run: bool = False) -> pd.DataFrame:
    """Delete one run and everything stored for it (its edges, tokens, sentence list, scores,
    tests and classifications) in one transaction: all of it or, on any error, nothing.

    The corpus (sentences and words) stays: other runs may share it, and an ingest of it reuses
    it. With ``dry_run`` nothing is deleted. Returns the rows per table (columns table, rows).
    DuckDB reuses the freed space for later writes; :func:`headdb.db.compact` shrinks the file.
    """
    from headdb.db import quote_ident

    dry_run = yes_no("dry_run", dry_run)
    if run is None:  # resolve_run's None is the latest finished run: a deletion names its run
        raise InputError("drop_run deletes the run it is given: pass its id or name, not None")
    con = connect(db, read_only=dry_run, existing=True)
    try:
        run_id = resolve_run(con, run)
        tables = run_tables(con)
        with transaction(con):
            counts = [(t, con.execute(f"SELECT count(*) FROM {quote_ident(t)} WHERE run_id = ?", [run_id]).fetchone()[0])
                      for t in tables]
            if not dry_run:
                for t in tables:
                    con.execute(f"DELETE FROM {quote_ident(t)} WHERE run_id = ?", [run_id])
    finally:
        con.close()
    out = pd.DataFrame(counts, columns=["table", "rows"])
    out.attrs["run_id"] = run_id
    return out


def summary(db: str | Path, run: int | str | None = None) -> dict[str, Any]:
    """What a run stored: sentences, tokens, edges and kept attention mass per layer. In a run
    of sentence pairs (``pairs`` True), ``sentences`` and ``skipped`` count pairs.

    Its scan of the run's edges reads with DuckDB's memory capped, as classify's does: uncapped,
    DuckDB kept every block it read cached, so the summary's memory grew with the store (peak RSS
    271 MB for 19 M edges, 459 MB for 57 M)."""
    from headdb.db import connect_capped, memory_limit_mb

    con = connect_capped(db, memory_limit_mb())
    try:
        run_id = resolve_run(con, run)
        return run_summary(con, run_id)
    finally:
        con.close()


def run_summary(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, Any]:
    counts = con.execute(
        """
        SELECT count(*) FILTER (WHERE status <> 'skipped'),
               count(*) FILTER (WHERE status = 'skipped'),
               count(*) FILTER (WHERE status = 'truncated'),
               coalesce(sum(n_tokens), 0)
        FROM run_sentences WHERE run_id = ?
        """, [run_id]).fetchone()
    layers = con.execute(
        """
        SELECT layer, count(*) AS edges,
               sum(weight::DOUBLE) / (SELECT sum(n_tokens::BIGINT) * max(r.n_heads)
                                      FROM run_sentences s, runs r
                                      WHERE s.run_id = ? AND r.run_id = ?) AS kept_mass
        FROM edges WHERE run_id = ? GROUP BY layer ORDER BY layer
        """, [run_id, run_id, run_id]).df()
    info = con.execute("SELECT run_name, status, model, corpus_path, pairs FROM runs WHERE run_id = ?",
                       [run_id]).fetchone()
    return {
        # as `headdb runs` shows it: a run left 'running' in a store this process could open was interrupted
        "run_id": run_id, "run_name": info[0], "status": shown_status(info[1]),
        "model": info[2], "corpus": info[3],
        # whether the inputs are sentence pairs (--pairs, a TSV corpus): "sentences" then counts pairs
        "pairs": bool(info[4]),
        "sentences": int(counts[0]), "skipped": int(counts[1]), "truncated": int(counts[2]),
        "tokens": int(counts[3]), "edges": int(layers["edges"].sum()) if len(layers) else 0,
        "layers": layers,
    }
