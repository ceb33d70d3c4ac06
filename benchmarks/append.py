"""``python -m benchmarks.append``: how fast DuckDB stores edges, apart from any model.

Builds the edges an ingest of a corpus would hand to DuckDB (the corpus's real token counts,
every layer x head x query row with its top-k keys in rank order, softmax-like float32 weights;
random, so no model is needed), then appends them to a fresh store in commits of about
``--commit-edges`` edges, the way ``headdb.store.write_batches`` does (``INSERT INTO edges
SELECT ?, * FROM arrow``), for each variant: DuckDB threads, Arrow record-batch size
(``store.ARROW_CHUNK_ROWS``), concurrent writer connections (commits handed round-robin to
that many threads, each with its own cursor, so that commits overlap), and DuckDB's memory
limit. Prints edges/s and bytes per edge; writes JSON with --out.

    python -m benchmarks.append --threads 2 --chunks 0,122880 --writers 1,2    # this machine
    python -m benchmarks.append --layers 12 --threads 16 --writers 1,2,4       # a GPU box (bert-base shape)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.append", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U (default: EWT dev, else the bundled sample)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="model folder with tokenizer.json (default: bundled)")
    ap.add_argument("--sentences", type=int, default=2001)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--commit-edges", type=int, default=10_000_000, help="edges per commit (about)")
    ap.add_argument("--threads", default=str(min(os.cpu_count() or 1, 16)), help="comma-separated DuckDB threads")
    ap.add_argument("--chunks", default="0,122880,983040", help="comma-separated Arrow record-batch rows (0: one)")
    ap.add_argument("--writers", default="1,2", help="comma-separated concurrent writer connections")
    ap.add_argument("--memory", default="default", help="comma-separated DuckDB memory limits ('default': DuckDB's)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = ap.parse_args(argv)

    from benchmarks.common import EWT_DEV, machine
    from headdb.resources import sample_corpus

    corpus = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    t0 = time.perf_counter()
    lengths = token_counts(corpus, args.sentences, args.tokenizer)
    tables = commits(lengths, args.layers, args.heads, args.top_k, args.commit_edges)
    print(f"{sum(t.num_rows for t in tables):,} edges in {len(tables)} commits, built in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="headdb-append-"))
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    memories = [None if m.strip() == "default" else m.strip() for m in args.memory.split(",")]
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    for _ in range(args.reps):
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
