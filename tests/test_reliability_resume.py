"""Reliability (#6): crash and resume, and write errors.

A real `headdb ingest` is killed with SIGKILL at several random points and re-run each time;
the final store equals an uninterrupted run's. A write error part-way through a batch (a full
disk, simulated) leaves the database usable with the committed batches and the run `failed`;
running again completes it. All `slow`: they run the bundled model.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

EWT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "en_ewt-ud-dev.conllu"  # beside the checkout
HEADDB = str(Path(sys.executable).with_name("headdb"))
N = 150
BATCH = 4
TABLES = ("sentences", "words", "tokens", "run_sentences", "edges")
KEYS = {
    "sentences": "corpus_id, sentence_id",
    "words": "corpus_id, sentence_id, word_pos",
    "tokens": "run_id, sentence_id, token_pos",
    "run_sentences": "run_id, sentence_id",
    "edges": "run_id, sentence_id, layer, head, query_pos, key_pos",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus() -> Path:
    if EWT.exists():
        return EWT
    from headdb.resources import sample_corpus

    return sample_corpus()  # the bundled 300-sentence slice of the same file


def store_digest(db: Path) -> dict[str, tuple]:
    """Per table: rows, distinct keys, and an order-free checksum over every column; for edges
    also an ordered md5 of the weights. Equal digests mean the same rows."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out: dict[str, tuple] = {}
        for table in TABLES:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall()]
            # table and column names come from the schema, not from users
            out[table] = con.execute(
                f"SELECT count(*), count(DISTINCT ({KEYS[table]})), sum(hash({', '.join(cols)})::HUGEINT) FROM {table}"
            ).fetchone()
        out["edge_weights_md5"] = con.execute(
            "SELECT md5(string_agg(weight::VARCHAR, ',' ORDER BY sentence_id, layer, head, query_pos, key_pos)) "
            "FROM edges").fetchone()
        out["runs"] = con.execute("SELECT count(*), min(status), max(status) FROM runs").fetchone()
        return out
    finally:
        con.close()


def committed(db: Path) -> int:
    """Sentences whose batch committed (what a resume skips); -1 when there is no run yet."""
    if not db.exists():
        return -1
    con = duckdb.connect(str(db), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'run_sentences'"
                           ).fetchone()[0]:
            return -1
        n = con.execute("SELECT count(*) FROM run_sentences").fetchone()[0]
        # never a partial batch: tokens and edges exist exactly for the committed sentences
        assert con.execute("SELECT count(DISTINCT sentence_id) FROM tokens").fetchone()[0] \
            == con.execute("SELECT count(*) FROM run_sentences WHERE status <> 'skipped'").fetchone()[0]
        assert con.execute("SELECT count(*) FROM edges e ANTI JOIN run_sentences r USING (run_id, sentence_id)"
                           ).fetchone()[0] == 0
        return n
    finally:
        con.close()


def ingest_cmd(db: Path, corpus: Path) -> list[str]:
    return [HEADDB, "ingest", str(db), str(corpus), "--limit", str(N), "--batch-size", str(BATCH), "-q"]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    """An uninterrupted run."""
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    subprocess.run(ingest_cmd(db, corpus), check=True, capture_output=True, env=env(), timeout=900)
    proc = subprocess.run(ingest_cmd(db, corpus), check=True, capture_output=True, text=True, env=env(), timeout=900)
    assert "already complete" in proc.stderr
    return db


# The real CLI in a child process; the only additions are a line on stdout after each batch
# commits, so that the parent can kill it at a chosen point whatever the machine's speed, and
# one commit per batch (the whole small run would otherwise be one group: COMMIT_EDGES).
OBSERVED_CLI = """
import sys, time
import importlib
import headdb.store as store
importlib.import_module("headdb.ingest").COMMIT_EDGES = 0
real = store.write_batches
def write_batches(*args, **kwargs):
    n = real(*args, **kwargs)
    print("committed", time.perf_counter(), flush=True)
    return n
store.write_batches = write_batches
from headdb.cli import main
sys.argv = ["headdb", *sys.argv[1:]]
main()
"""


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path, corpus, reference):
    rng = random.Random(6)
    db = tmp_path / "crash.db"
    args = [sys.executable, "-c", OBSERVED_CLI, *ingest_cmd(db, corpus)[1:]]
    batches = -(-N // BATCH)
    seen: list[int] = []
    kills = 0
    # first while the model loads (nothing written yet), then after a random number of commits
    # plus a random part of a batch's time, so that some kills land inside a transaction
    plan = [None] + sorted(rng.sample(range(1, batches - 1), 4))
    done_batches = 0
    for target in plan:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        if target is None:
            time.sleep(1.0)
        else:
            stamps = []
            while done_batches + len(stamps) < target:
                line = proc.stdout.readline()
                if not line:
                    break
                stamps.append(float(line.split()[1]))
            gap = (stamps[-1] - stamps[-2]) if len(stamps) > 1 else 0.05
            time.sleep(rng.uniform(0.0, 1.0) * gap)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        n = committed(db)
        seen.append(n)
        done_batches = max(0, n) // BATCH
        if n == N:
            break
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert kills >= 4 and sum(0 < n < N for n in seen) >= 3, f"kills landed at {seen}"
    final = subprocess.run(ingest_cmd(db, corpus), capture_output=True, text=True, env=env(), timeout=900)
    assert final.returncode == 0, final.stderr
    assert "resumed" in final.stderr
    assert committed(db) == N
    digest = store_digest(db)
    assert digest == store_digest(reference)
    assert digest["runs"] == (1, "done", "done")
    for table in TABLES:
        rows, keys, _ = digest[table]
        assert rows == keys, f"{table} has duplicate rows"


def _flaky_insert(monkeypatch, fail_at: int):
    """Make the ``fail_at``-th batch fail half-way, after its tokens went in, like a full disk."""
    import importlib

    store = importlib.import_module("headdb.store")
    real = store._insert
    calls = {"tokens": 0}

    def insert(con, table, data, **kwargs):
        real(con, table, data, **kwargs)
        if table == "tokens":
            calls["tokens"] += 1
            if calls["tokens"] == fail_at:
                raise duckdb.IOException('Could not write file "store.db": No space left on device')

    monkeypatch.setattr(store, "_insert", insert)


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "writer-thread"])
def test_write_error_leaves_a_usable_store_and_a_failed_run_that_resumes(tmp_path, monkeypatch, corpus,
                                                                         reference, overlap):
    import importlib

    from headdb.errors import HeaddbError

    ingest_mod = importlib.import_module("headdb.ingest")  # the module, not the lazy API function

    monkeypatch.setattr(ingest_mod, "OVERLAP_WRITES", overlap, raising=False)
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)  # one commit per batch
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    db = tmp_path / "full.db"
    _flaky_insert(monkeypatch, fail_at=3)
    with pytest.raises(HeaddbError) as info:
        ingest_mod.ingest(db, corpus, limit=N, batch_size=BATCH)
    message = str(info.value)
    assert "No space left on device" in message and "\n" not in message
    assert "failed" in message and "again" in message  # says what happened and what to do
    # usable, with exactly the two batches that committed, and the run marked failed
    assert committed(db) == 2 * BATCH
    con = duckdb.connect(str(db))
    assert con.execute("SELECT status, error FROM runs").fetchall()[0][0] == "failed"
    assert "No space left" in con.execute("SELECT error FROM runs").fetchone()[0]
    con.close()
    monkeypatch.undo()  # the disk has room again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = ingest_mod.ingest(db, corpus, limit=N, batch_size=BATCH)
    assert result.resumed and result.sentences == N - 2 * BATCH
    assert store_digest(db) == store_digest(reference)


def test_a_write_error_whose_failure_mark_is_refused_says_so_and_the_run_shows_as_interrupted(tmp_path, monkeypatch,
                                                                                               corpus):
    """The README's write-error row: where the disk refuses even the mark of the failure, the
    error says so, `headdb runs` lists the run as interrupted, and the same command resumes it."""
    import importlib

    import headdb
    from headdb.errors import HeaddbError

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)  # one commit per batch
    monkeypatch.setattr(ingest_mod, "_fail", lambda con, run_id, exc: False)  # the mark is refused too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    db = tmp_path / "full.db"
    _flaky_insert(monkeypatch, fail_at=3)
    with pytest.raises(HeaddbError) as info:
        ingest_mod.ingest(db, corpus, limit=3 * BATCH, batch_size=BATCH)
    message = str(info.value)
    assert "No space left on device" in message and "\n" not in message
    assert (f"; its {2 * BATCH} committed sentences are kept and the run could not be marked failed "
            "(it shows as interrupted): run the same command again to resume it") in message, message
    assert headdb.runs(db)["status"].tolist() == ["interrupted"]
    monkeypatch.undo()  # the disk has room again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = ingest_mod.ingest(db, corpus, limit=3 * BATCH, batch_size=BATCH)
    assert result.resumed and result.sentences == BATCH
    assert headdb.runs(db)["status"].tolist() == ["done"]


def test_a_write_error_in_a_run_of_pairs_counts_pairs(tmp_path, monkeypatch, corpus):
    """A run of pairs counts its inputs as pairs in the write error too (it said "its 8 committed
    sentences are kept" of 8 pairs, 16 sentences), as the finished, interrupted and resumed
    ingests' lines do."""
    import importlib

    from headdb.errors import HeaddbError

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)  # one commit per batch
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    db = tmp_path / "full.db"
    _flaky_insert(monkeypatch, fail_at=3)
    with pytest.raises(HeaddbError) as info:
        ingest_mod.ingest(db, corpus, pairs=True, limit=3 * BATCH, batch_size=BATCH)
    message = str(info.value)
    assert f"; its {2 * BATCH} committed pairs are kept and the run is marked failed" in message, message
    assert committed(db) == 2 * BATCH


def test_cli_write_error_is_one_line(tmp_path, corpus):
    """Through the CLI, in a child process with the failure injected: one `error:` line."""
    db = tmp_path / "full.db"
    code = (
        "import sys, duckdb, headdb.store as s\n"
        "real = s._insert\n"
        "def insert(con, table, data, **kwargs):\n"
        "    real(con, table, data, **kwargs)\n"
        "    if table == 'edges' or table == 'tokens':\n"
        "        raise duckdb.IOException('No space left on device')\n"
        "s._insert = insert\n"
        "from headdb.cli import main\n"
        f"sys.argv = ['headdb', 'ingest', {str(db)!r}, {str(corpus)!r}, '--limit', '8', '-q']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "No space left on device" in proc.stderr
    # what the store holds, as it holds it
    assert "; no sentence was committed and the run is marked failed: run the same command again to resume it" \
        in proc.stderr, proc.stderr
