"""``python -m benchmarks.append``: how fast DuckDB stores edges, apart from any model.

Builds the edges an ingest of a corpus would hand to DuckDB (the corpus's real token counts,
every layer x head x query row with its top-k keys in rank order, softmax-like float32 weights;
random, so no model is needed), then appends them to a fresh store in commits of about
``--commit-edges`` edges, the way ``headdb.store.write_batches`` does (``store.insert_edges``:
``INSERT INTO edge_store ... SELECT ?, ... FROM arrow``), for each variant: DuckDB threads, Arrow record-batch size
(``store.ARROW_CHUNK_ROWS``), concurrent writer connections (commits handed round-robin to
that many threads, each with its own cursor, so that commits overlap), and DuckDB's memory
limit. Prints edges/s and bytes per edge; writes JSON with --out.

``--layouts`` compares other ways of storing the same edges (one writer, one Arrow chunk):
``flat`` is headdb's edge_store (the default and the only one the options above vary);
``flat16`` the same with ``--weight-bits 16`` weights rounded in numpy beforehand (``flat16sql``:
rounded in the INSERT, as headdb does); ``nokeys`` leaves out sentence_id, layer and head (a
diagnostic: what those columns cost); ``rows`` keeps them once per attention row in a table of
rows and gives each edge a row_id; ``lists`` stores one row per attention row with its keys and
weights as lists (``lists16``: the weights as ``--weight-bits 16`` stores them). ``--edges-from
STORE`` appends a stored run's edges, with the model's real weights, instead of random ones (the
bytes per edge then mean something). For ``flat``, ``rows`` and the lists it also times the per-row residual and
smallest weight that classification's bound needs (a GROUP BY for flat, none for lists).

    python -m benchmarks.append --threads 2 --chunks 0,122880 --writers 1,2    # this machine
    python -m benchmarks.append --layers 12 --threads 16 --writers 1,2,4       # a GPU box (bert-base shape)
    python -m benchmarks.append --threads 2 --chunks 0 --writers 1 --commit-edges 2000000 \
        --layouts flat,flat16,flat16sql,nokeys,rows,lists --reps 2          # layouts (docs/benchmarks.md)
    python -m benchmarks.append --edges-from store.db --threads 2 --commit-edges 2000000 \
        --layouts flat,flat16sql,lists,lists16 --reps 2                     # the same, on a run's real weights
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from itertools import product
from pathlib import Path


def token_counts(corpus: Path, n: int, tokenizer: Path | None) -> list[int]:
    """Tokens per sentence (specials included) of the first ``n`` sentences, as ingestion counts them."""
    from headdb.corpus import read_corpus
    from headdb.model import align, load_tokenizer
    from headdb.resources import default_model

    tok = load_tokenizer(tokenizer or default_model())
    sents = []
    for s in read_corpus(corpus, "conllu"):
        sents.append(s)
        if len(sents) == n:
            break
    while len(sents) < n:  # the corpus repeated
        sents += sents[: n - len(sents)]
    return [e.length for i in range(0, len(sents), 512) for e in align(tok, sents[i : i + 512], True, 512)]


def commits(lengths: list[int], layers: int, heads: int, k: int, commit_edges: int, seed: int = 0):
    """The edge tables of the commits (sentence_id, layer, head, query_pos, key_pos, weight), one
    contiguous Arrow table each, sentences in length order as ingestion batches them."""
    import numpy as np
    import pyarrow as pa

    from headdb.store import EDGE_SCHEMA

    rng = np.random.default_rng(seed)
    order = np.argsort(np.asarray(lengths), kind="stable")
    out, group = [], []

    def flush() -> None:
        cols = [np.concatenate([g[i] for g in group]) for i in range(6)]
        out.append(pa.Table.from_arrays([pa.array(c) for c in cols], schema=EDGE_SCHEMA))
        group.clear()

    size = 0
    for sid in order:
        n = lengths[sid]
        r = min(k, n)
        rows = layers * heads * n
        shape = (layers, heads, n, r)
        logits = rng.normal(size=(rows, n)) * 3
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        top = np.argsort(-w, axis=1, kind="stable")[:, :r]
        weight = np.take_along_axis(w, top, axis=1).astype(np.float32).ravel()
        grid = np.indices(shape, dtype=np.int16).reshape(4, -1)
        group.append((np.full(rows * r, sid, np.int32), grid[0], grid[1], grid[2], top.astype(np.int16).ravel(), weight))
        size += rows * r
        if size >= commit_edges:
            flush()
            size = 0
    if group:
        flush()
    return out


def stored_commits(db: Path, commit_edges: int, run: int | None = None):
    """The edges of a stored run (real weights, in their stored order) as the commit tables of
    :func:`commits`, cut at sentence boundaries every ``commit_edges`` edges or so."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    from headdb.store import EDGE_SCHEMA

    con = duckdb.connect(str(db), read_only=True)
    try:
        run = run if run is not None else con.execute("SELECT max(run_id) FROM runs").fetchall()[0][0]
        t = con.sql("SELECT sentence_id, layer, head, query_pos, key_pos, weight FROM edges WHERE run_id = $run "
                    "ORDER BY sentence_id, layer, head, query_pos, weight DESC, key_pos",
                    params={"run": run}).to_arrow_table()
    finally:
        con.close()
    t = pa.Table.from_arrays([c.combine_chunks() for c in t.columns], schema=EDGE_SCHEMA)
    sid = t.column("sentence_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    out, first = [], 0
    while first < t.num_rows:
        i = int(np.searchsorted(starts, first + commit_edges))
        end = int(starts[i]) if i < len(starts) else t.num_rows
        out.append(t.slice(first, end - first))
        first = end
    return out


def append(tables, threads: int, chunk: int, writers: int, memory: str | None, work: Path) -> dict:
    """Append the commits to a fresh store; edges/s over the whole (the last commit included)."""
    import pyarrow as pa

    from headdb.db import connect, transaction
    from headdb.store import insert_edges

    db = work / f"append-t{threads}-c{chunk}-w{writers}-m{memory}.db"
    con = connect(db)
    con.execute("SET threads = ?", [threads])
    if memory:
        con.execute("SET memory_limit = ?", [memory])
    if chunk:
        tables = [pa.Table.from_batches(t.to_batches(max_chunksize=chunk), schema=t.schema) for t in tables]

    def insert(c, t) -> None:
        with transaction(c):
            insert_edges(c, 1, t)

    t0 = time.perf_counter()
    if writers == 1:
        for t in tables:
            insert(con, t)
    else:
        jobs: queue.Queue = queue.Queue()
        for t in tables:
            jobs.put(t)
        errors: list[BaseException] = []

        def work_loop() -> None:
            c = con.cursor()
            try:
                while True:
                    try:
                        t = jobs.get_nowait()
                    except queue.Empty:
                        return
                    insert(c, t)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                c.close()

        pool = [threading.Thread(target=work_loop) for _ in range(writers)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        if errors:
            raise errors[0]
    seconds = time.perf_counter() - t0
    edges = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    con.execute("CHECKPOINT")
    con.close()
    size = db.stat().st_size
    db.unlink()
    return {"threads": threads, "chunk_rows": chunk, "writers": writers, "memory_limit": memory or "default",
            "edges": edges, "commits": len(tables), "seconds": seconds, "edges_per_s": edges / seconds,
            "bytes_per_edge": size / edges}


LAYOUTS = ("flat", "flat16", "flat16sql", "nokeys", "rows", "lists", "lists16")

_LAYOUT_DDL = {
    "flat16": ["CREATE TABLE e (run_id INTEGER NOT NULL, sentence_id INTEGER NOT NULL, layer SMALLINT NOT NULL, "
               "head SMALLINT NOT NULL, query_pos SMALLINT NOT NULL, key_pos SMALLINT NOT NULL, "
               "weight16 USMALLINT NOT NULL)"],
    "nokeys": ["CREATE TABLE e (run_id INTEGER NOT NULL, query_pos SMALLINT NOT NULL, key_pos SMALLINT NOT NULL, "
               "weight FLOAT NOT NULL)"],
    "rows": ["CREATE TABLE e (run_id INTEGER NOT NULL, row_id INTEGER NOT NULL, key_pos SMALLINT NOT NULL, "
             "weight FLOAT NOT NULL)",
             "CREATE TABLE r (run_id INTEGER NOT NULL, row_id INTEGER NOT NULL, sentence_id INTEGER NOT NULL, "
             "layer SMALLINT NOT NULL, head SMALLINT NOT NULL, query_pos SMALLINT NOT NULL)"],
    "lists": ["CREATE TABLE e (run_id INTEGER NOT NULL, sentence_id INTEGER NOT NULL, layer SMALLINT NOT NULL, "
              "head SMALLINT NOT NULL, query_pos SMALLINT NOT NULL, keys SMALLINT[] NOT NULL, "
              "weights FLOAT[] NOT NULL)"],
    "lists16": ["CREATE TABLE e (run_id INTEGER NOT NULL, sentence_id INTEGER NOT NULL, layer SMALLINT NOT NULL, "
                "head SMALLINT NOT NULL, query_pos SMALLINT NOT NULL, keys SMALLINT[] NOT NULL, "
                "weights16 USMALLINT[] NOT NULL)"],
}

#: per attention row: the residual mass and the smallest stored weight (classification's bound)
_ROW_STATS = {
    "flat": "SELECT count(*), sum(r), sum(m) FROM (SELECT 1 - sum(weight::DOUBLE) AS r, min(weight) AS m "
            "FROM edges GROUP BY run_id, sentence_id, layer, head, query_pos)",
    "rows": "SELECT count(*), sum(r), sum(m) FROM (SELECT 1 - sum(weight::DOUBLE) AS r, min(weight) AS m "
            "FROM e GROUP BY run_id, row_id)",
    "lists": "SELECT count(*), sum(1 - list_sum(weights)), sum(list_min(weights)) FROM e",
    "lists16": "SELECT count(*), sum(1 - list_sum(weights16) / 65535), sum(list_min(weights16) / 65535) FROM e",
}


def _row_starts(t) -> "np.ndarray":  # noqa: F821 - numpy imported by the caller
    import numpy as np

    cols = [t.column(c).to_numpy() for c in ("sentence_id", "layer", "head", "query_pos")]
    new = np.ones(t.num_rows, dtype=bool)
    new[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in cols])
    return np.flatnonzero(new)


def _layout_tables(tables, layout: str) -> tuple[list[dict], float]:
    """Each commit as the layout's Arrow tables (name -> table); seconds spent converting that
    ingestion would spend too (the 16-bit rounding), apart from the rest of the conversion."""
    import numpy as np
    import pyarrow as pa

    from headdb.store import weight16

    out, prep, row_base = [], 0.0, 0
    for t in tables:
        if layout == "flat16":
            t0 = time.perf_counter()
            w16 = weight16(t.column("weight").to_numpy())
            prep += time.perf_counter() - t0
            out.append({"e": t.drop_columns(["weight"]).append_column("weight16", pa.array(w16))})
        elif layout == "nokeys":
            out.append({"e": t.select(["query_pos", "key_pos", "weight"])})
        elif layout in ("rows", "lists", "lists16"):
            starts = _row_starts(t)
            heads = t.take(pa.array(starts)).select(["sentence_id", "layer", "head", "query_pos"])
            if layout == "rows":
                counts = np.diff(np.append(starts, t.num_rows))
                row_id = np.arange(row_base, row_base + len(starts), dtype=np.int32)
                edges = pa.table({"row_id": np.repeat(row_id, counts), "key_pos": t.column("key_pos"),
                                  "weight": t.column("weight")})
                out.append({"e": edges, "r": heads.add_column(0, "row_id", pa.array(row_id))})
                row_base += len(starts)
            else:
                offsets = pa.array(np.append(starts, t.num_rows).astype(np.int32))
                keys = pa.ListArray.from_arrays(offsets, t.column("key_pos").combine_chunks())
                w = t.column("weight").combine_chunks()
                if layout == "lists16":
                    t0 = time.perf_counter()
                    w = pa.array(weight16(w.to_numpy()))
                    prep += time.perf_counter() - t0
                weights = pa.ListArray.from_arrays(offsets, w)
                name = "weights16" if layout == "lists16" else "weights"
                out.append({"e": heads.append_column("keys", keys).append_column(name, weights)})
        else:
            out.append({"e": t})
    return out, prep


def append_layout(tables, layout: str, threads: int, work: Path) -> dict:
    """Append the commits in one of :data:`LAYOUTS` to a fresh file (one writer, one chunk)."""
    import duckdb

    from headdb.db import connect, transaction
    from headdb.store import insert_edges

    db = work / f"layout-{layout}-t{threads}.db"
    headdb_store = layout in ("flat", "flat16sql")
    con = connect(db) if headdb_store else duckdb.connect(str(db))
    con.execute("SET threads = ?", [threads])
    for ddl in _LAYOUT_DDL.get(layout, []):
        con.execute(ddl)
    parts, prep = _layout_tables(tables, "flat" if headdb_store else layout)
    edges = sum(t.num_rows for t in tables)
    t0 = time.perf_counter()
    for part in parts:
        if headdb_store:
            with transaction(con):
                insert_edges(con, 1, part["e"], 16 if layout == "flat16sql" else 32)
            continue
        con.execute("BEGIN TRANSACTION")
        for name, table in part.items():
            con.register("_part", table)
            con.execute(f"INSERT INTO {name} SELECT 1, * FROM _part")
            con.unregister("_part")
        con.execute("COMMIT")
    seconds = time.perf_counter() - t0
    con.execute("CHECKPOINT")
    stored = con.execute("SELECT count(*) FROM edges" if headdb_store else
                         "SELECT sum(len(keys)) FROM e" if layout.startswith("lists") else "SELECT count(*) FROM e").fetchone()[0]
    row = {"layout": layout, "stored_edges": int(stored), "threads": threads, "edges": edges, "commits": len(tables), "seconds": seconds,
           "prepare_seconds": prep, "edges_per_s": edges / seconds}
    if layout in _ROW_STATS:
        t0 = time.perf_counter()
        n_rows = con.execute(_ROW_STATS[layout]).fetchone()[0]
        row |= {"row_stats_seconds": time.perf_counter() - t0, "attention_rows": n_rows}
    block_size, used = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchone()
    con.close()
    row["bytes_per_edge"] = db.stat().st_size / edges
    row["used_bytes_per_edge"] = block_size * used / edges  # without the blocks the commits left free
    db.unlink()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.append", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U (default: EWT dev, else the bundled sample)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="model folder with tokenizer.json (default: bundled)")
    ap.add_argument("--sentences", type=int, default=2001)
    ap.add_argument("--edges-from", type=Path, default=None,
                    help="a store: append its latest run's edges (real weights) instead of random ones")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--commit-edges", type=int, default=10_000_000, help="edges per commit (about)")
    ap.add_argument("--threads", default=str(min(os.cpu_count() or 1, 16)), help="comma-separated DuckDB threads")
    ap.add_argument("--chunks", default="0,122880,983040", help="comma-separated Arrow record-batch rows (0: one)")
    ap.add_argument("--writers", default="1,2", help="comma-separated concurrent writer connections")
    ap.add_argument("--memory", default="default", help="comma-separated DuckDB memory limits ('default': DuckDB's)")
    ap.add_argument("--layouts", default="", help=f"comma-separated layouts to compare instead: {', '.join(LAYOUTS)}")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = ap.parse_args(argv)

    from benchmarks.common import EWT_DEV, machine, scratch_dir
    from headdb.resources import sample_corpus

    corpus = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    t0 = time.perf_counter()
    if args.edges_from is not None:
        tables = stored_commits(args.edges_from, args.commit_edges)
    else:
        lengths = token_counts(corpus, args.sentences, args.tokenizer)
        tables = commits(lengths, args.layers, args.heads, args.top_k, args.commit_edges)
    print(f"{sum(t.num_rows for t in tables):,} edges in {len(tables)} commits, built in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    work = scratch_dir("headdb-append-")
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    memories = [None if m.strip() == "default" else m.strip() for m in args.memory.split(",")]
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        ap.error(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    for _ in range(args.reps if layouts else 0):
        for threads, layout in product(ints(args.threads), layouts):
            row = append_layout(tables, layout, threads, work)
            results["rows"].append(row)
            stats = f"  row stats {row['row_stats_seconds']:.3f} s" if "row_stats_seconds" in row else ""
            prep = f" (+ {row['prepare_seconds']:.2f} s rounding)" if row["prepare_seconds"] else ""
            print(f"threads={threads:<3d} layout={layout:9s} {row['seconds']:6.2f} s{prep}  "
                  f"{row['edges_per_s'] / 1e6:6.1f} M edges/s  {row['bytes_per_edge']:.2f} B/edge "
                  f"({row['used_bytes_per_edge']:.2f} in used blocks){stats}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    for _ in range(0 if layouts else args.reps):
        for threads, chunk, writers, memory in product(ints(args.threads), ints(args.chunks), ints(args.writers),
                                                       memories):
            row = append(tables, threads, chunk, writers, memory, work)
            results["rows"].append(row)
            print(f"threads={threads:<3d} chunk={chunk:<8d} writers={writers} memory={row['memory_limit']:8s} "
                  f"{row['seconds']:6.2f} s  {row['edges_per_s'] / 1e6:6.1f} M edges/s  "
                  f"{row['bytes_per_edge']:.2f} B/edge", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
