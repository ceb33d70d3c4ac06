"""``python -m benchmarks.gil``: how a Python thread running beside a DuckDB query slows it down.

DuckDB's Python client takes the GIL back, again and again, while a query runs (between its tasks),
and each time waits until the thread holding it lets go: up to Python's switch interval
(``sys.setswitchinterval``, 5 ms by default). An ingest runs Python threads beside its DuckDB
writers (a reading thread, the model's loop), so this measures, for each switch interval:

- ``query``: an aggregate over ``range(N)`` (no Python object involved);
- ``append``: headdb's edge INSERT of random EWT-shaped edges (``benchmarks.append``),

each alone and with a thread that only runs Python, in the same process. Prints seconds and
the slowdown; writes JSON with --out.

    python -m benchmarks.gil --threads 1,2                     # this machine
    python -m benchmarks.gil --threads 1,16 --layers 12        # a GPU box
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path


class _Busy:
    """A thread that runs Python (and so holds the GIL whenever it may) until stopped."""

    def __enter__(self):
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        x = 0
        while not self._stop:
            for i in range(1000):
                x += i

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gil", description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=None, help="CoNLL-U (default: EWT dev, else the bundled sample)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="model folder with tokenizer.json (default: bundled)")
    ap.add_argument("--sentences", type=int, default=2001)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", default="1,2", help="comma-separated DuckDB threads")
    ap.add_argument("--switch-us", default="5000,1000,200,50", help="comma-separated switch intervals (microseconds)")
    ap.add_argument("--rows", type=int, default=60_000_000, help="rows of the aggregate query")
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = ap.parse_args(argv)

    from benchmarks.append import commits, token_counts
    from benchmarks.common import EWT_DEV, scratch_dir
    from headdb.db import connect, transaction
    from headdb.resources import sample_corpus
    from headdb.store import insert_edges

    corpus = args.corpus or (EWT_DEV if EWT_DEV.exists() else sample_corpus())
    tables = commits(token_counts(corpus, args.sentences, args.tokenizer), args.layers, 12, 8, 5_000_000)
    edges = sum(t.num_rows for t in tables)
    print(f"{edges:,} edges in {len(tables)} commits; query over {args.rows:,} rows", flush=True)
    work = scratch_dir("headdb-gil-")
    query = f"SELECT sum(hash(range * 7 + 3) % 1000) FROM range({int(args.rows)})"
    saved = sys.getswitchinterval()
    rows = []
    n = [0]

    def timed(kind: str, threads: int) -> float:
        n[0] += 1
        con = connect(work / f"gil-{n[0]}.db")
        con.execute("SET threads = ?", [threads])
        t0 = time.perf_counter()
        if kind == "query":
            con.execute(query).fetchall()
        else:
            for t in tables:
                with transaction(con):
                    insert_edges(con, 1, t)
        secs = time.perf_counter() - t0
        if kind == "append":
            stored = con.execute("SELECT count(*) FROM edge_store").fetchone()[0]
            if stored != edges:
                raise SystemExit(f"append stored {stored:,} of {edges:,} edges")
        con.close()
        return secs

    try:
        for threads in [int(x) for x in args.threads.split(",")]:
            for us in [int(x) for x in args.switch_us.split(",")]:
                sys.setswitchinterval(us / 1e6)
                for kind in ("query", "append"):
                    alone = timed(kind, threads)
                    with _Busy():
                        beside = timed(kind, threads)
                    row = {"kind": kind, "threads": threads, "switch_us": us, "alone_s": round(alone, 3),
                           "with_python_thread_s": round(beside, 3), "slowdown": round(beside / alone, 2)}
                    rows.append(row)
                    print(f"{kind:6s} threads={threads:<2d} switch={us:>5d}us  alone {alone:6.3f} s  "
                          f"beside a Python thread {beside:6.3f} s  x{beside / alone:.2f}", flush=True)
    finally:
        sys.setswitchinterval(saved)
    if args.out:
        import duckdb

        args.out.write_text(json.dumps({"duckdb": duckdb.__version__, "python": sys.version.split()[0],
                                        "edges": edges, "rows": rows}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
