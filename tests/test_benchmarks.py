"""The benchmark entry points run (a smoke test: no timings are checked; see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if tmpdir is not None:  # where the benchmark's own temporary folder goes
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_benchmark_suite_quick(tmp_path):
    out = tmp_path / "results.json"
    r = _run(["-m", "benchmarks", "--quick", "--sentences", "6", "--fidelity-sentences", "4", "--scale-base", "2",
              "--only", "ingestion,storage,classify,scale", "--no-text", "--workdir", str(tmp_path / "w"),
              "--out", str(out)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    ing = data["ingestion"]["conllu"]
    assert ing["end_to_end_sps"] > 0
    # the default model's forward stops at its last attention map, measured beside the whole one
    assert ing["forward_to_last_map_sps"] > 0 and ing["ratio_to_last_map"] > 0
    # each ingest against the forward-only pass of its own repetition
    assert ing["ratio_of_pairs"] == [e / f for e, f in zip(ing["end_to_end_all"], ing["forward_only_all"])]
    assert "the forward stopped at the last attention map" in r.stdout
    assert data["storage"]["edges"] > 0 and data["storage"]["edges_table_bytes_per_edge"] > 0
    assert "| measure | value | target |" in r.stdout
    rows = data["scale"]["rows"]
    assert [row["sentences"] for row in rows] == [2, 8, 32, 128]  # 2 sentences, 1x to 64x
    assert all(100 < row["ingest_peak_rss_mib"] < 4000 for row in rows)  # a child's own, in MiB


@pytest.mark.slow
def test_each_text_ingest_of_the_benchmark_parses_with_a_freshly_loaded_pipeline(tmp_path, monkeypatch):
    """As a fresh `headdb ingest` does: the texts parsed for the forward-only batches must not
    have warmed the pipeline (its vocabulary) that the timed ingests parse with."""
    import importlib

    from headdb.resources import sample_corpus

    parse = importlib.import_module("headdb.parse")
    sections = importlib.import_module("benchmarks.sections")
    pipelines: list = []  # held, so that no two can share an id
    real = parse.SpacyParser._finish  # every batch's parse here, through a call or a pipe

    def recording(self, shares):
        pipelines.append(self.nlp)
        return real(self, shares)

    monkeypatch.setattr(parse.SpacyParser, "_finish", recording)
    out = sections.ingestion(tmp_path, sample_corpus(), 6, 2, 4, None, "cpu", "float32")
    assert out["text"]["end_to_end_sps"] > 0
    # the forward-only batches' parse, then each of the two ingests, each with its own pipeline
    assert len(pipelines) >= 3 and len({id(nlp) for nlp in pipelines}) == 3


def test_the_timed_classification_checks_the_roles_as_a_fresh_process_does(tmp_path, monkeypatch):
    """The fidelity section classifies before the classify section: the timed classification
    must still run the roles' checks, as `headdb classify` in a new process does."""
    import importlib

    import numpy as np

    from role_reference import build_store, dirichlet_attention, simple_seq

    roles = importlib.import_module("headdb.roles")
    sections = importlib.import_module("benchmarks.sections")
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"])] * 2
    rng = np.random.default_rng(0)
    db = tmp_path / "c.db"
    build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs], pairs=False, run_id=1, top_k=3)
    checked: list[str] = []
    real = roles.check_columns

    def counting(con, role, attention=None):
        checked.append(role.name)
        return real(con, role, attention)

    monkeypatch.setattr(roles, "check_columns", counting)
    monkeypatch.setattr(roles, "_CHECKED", set())  # whatever this test process has checked before
    # as if every built-in were edited in place: none is spared as shipped, so each is checked
    monkeypatch.setattr(roles, "BUILTIN_CHECKED", {})
    headdb_classify = importlib.import_module("headdb.classify").classify
    headdb_classify(db, run=1)  # as the fidelity section does first
    first = len(checked)
    assert first >= 10  # every built-in role
    sections.classify_run(db, 1)
    assert len(checked) == 2 * first


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu(tmp_path):
    r = _run(["-m", "benchmarks.gpu", "--device", "cpu", "--tiny", "--dtypes", "float32", "--batch-sizes", "4",
              "--sentences", "6", "--no-variants", "--out", str(tmp_path)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu-results.json").read_text())["rows"]
    assert rows and rows[0]["sentences"] == 6
    assert {"forward", "topk", "write"} <= set(rows[0]["stages_s"])


@pytest.mark.slow
def test_gpu_benchmark_variants_set_the_named_settings(tmp_path):
    """--variant reruns the last model with module settings changed (writers, Arrow chunks)."""
    r = _run(["-m", "benchmarks.gpu", "--device", "cpu", "--tiny", "--dtypes", "float32", "--batch-sizes", "4",
              "--sentences", "6", "--variant", "writers=2,overlap=true", "--variant", "chunk=100",
              "--variant", "weight_bits=16", "--variant", "switch_us=0", "--variant", "tokenizer_parallel=true",
              "--variant", "stop_at_last_map=false", "--variant", "freeze_heap=false",
              "--out", str(tmp_path)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu-results.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["default", "writers2-overlapTrue", "chunk100", "weight_bits16",
                                                "switch_us0", "tokenizer_parallelTrue", "stop_at_last_mapFalse",
                                                "freeze_heapFalse"]
    assert [row["weight_bits"] for row in rows] == [32, 32, 32, 16, 32, 32, 32, 32]
    assert all(row["sentences"] == 6 and row["edges"] == rows[0]["edges"] for row in rows)
    assert all(row["host_cache_emptied"] is False for row in rows)  # no CUDA here


def test_gpu_benchmark_variant_specs():
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu import parse_variant

    assert parse_variant("writers=2, chunk=122880") == {"writers": 2, "chunk": 122880}
    assert parse_variant("pinned=false,overlap=TRUE") == {"pinned": False, "overlap": True}
    with pytest.raises(SystemExit, match="unknown setting 'thread'"):
        parse_variant("thread=4")


@pytest.mark.slow
def test_gil_benchmark_times_each_kind_alone_and_beside_a_python_thread(tmp_path):
    """benchmarks/gil.py: a query and the edge append (every edge stored), alone and beside a
    busy Python thread, for each switch interval."""
    out = tmp_path / "gil.json"
    r = _run(["-m", "benchmarks.gil", "--sentences", "6", "--layers", "1", "--rows", "100000", "--threads", "1",
              "--switch-us", "5000,50", "--out", str(out)], ROOT, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary folder went at exit
    data = json.loads(out.read_text())
    assert data["edges"] > 0
    assert [(row["kind"], row["switch_us"]) for row in data["rows"]] == [
        ("query", 5000), ("append", 5000), ("query", 50), ("append", 50)]
    assert all(row["alone_s"] > 0 and row["with_python_thread_s"] > 0 for row in data["rows"])


@pytest.mark.slow
def test_append_benchmark_stores_every_edge(tmp_path):
    """benchmarks/append.py: DuckDB's append alone, on edges shaped like an ingest's."""
    out = tmp_path / "append.json"
    r = _run(["-m", "benchmarks.append", "--sentences", "12", "--layers", "2", "--heads", "2",
              "--commit-edges", "2000", "--threads", "1", "--chunks", "0,500", "--writers", "1,2",
              "--out", str(out)], ROOT, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary folder went at exit
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and len({row["edges"] for row in rows}) == 1 and rows[0]["edges"] > 0
    assert {(row["chunk_rows"], row["writers"]) for row in rows} == {(0, 1), (0, 2), (500, 1), (500, 2)}
    assert all(row["commits"] > 1 and row["bytes_per_edge"] > 0 for row in rows)


@pytest.mark.slow
def test_append_benchmark_layouts_store_every_edge(tmp_path):
    """benchmarks/append.py --layouts: every layout holds every edge, and the per-row statistics
    (what classification's bound reads) agree between the flat table, rows and lists."""
    out = tmp_path / "layouts.json"
    r = _run(["-m", "benchmarks.append", "--sentences", "12", "--layers", "2", "--heads", "2",
              "--commit-edges", "2000", "--threads", "1", "--layouts", "flat,flat16,flat16sql,nokeys,rows,lists,lists16",
              "--out", str(out)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["layout"] for row in rows] == ["flat", "flat16", "flat16sql", "nokeys", "rows", "lists", "lists16"]
    assert all(row["stored_edges"] == row["edges"] > 0 and row["bytes_per_edge"] > 0 for row in rows)
    assert all(0 < row["used_bytes_per_edge"] <= row["bytes_per_edge"] for row in rows)
    stats = {row["layout"]: row["attention_rows"] for row in rows if "attention_rows" in row}
    assert set(stats) == {"flat", "rows", "lists", "lists16"} and len(set(stats.values())) == 1
    r = _run(["-m", "benchmarks.append", "--sentences", "2", "--layouts", "flat,columnar"], ROOT)
    assert r.returncode == 2 and "unknown layout(s) columnar" in r.stderr


def test_append_benchmark_edges_from_a_store(tmp_path):
    """benchmarks/append.py --edges-from: a stored run's own edges (its weights, its sentences),
    cut into commits at sentence boundaries, every one appended."""
    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(ROOT))
    from benchmarks.append import stored_commits
    from handmade_store import add_corpus, add_run
    from headdb.db import connect, transaction
    from headdb.store import EDGE_SCHEMA, insert_edges

    db = tmp_path / "store.db"
    con = connect(db)
    add_corpus(con, 3)
    add_run(con, 1, 1, 2, 3)
    rng = np.random.default_rng(0)
    n = 3 * 2 * 5 * 2  # sentences x heads x queries x two keys
    grid = np.indices((3, 1, 2, 5, 2)).reshape(5, -1)
    cols = [grid[0].astype(np.int32), grid[1].astype(np.int16), grid[2].astype(np.int16), grid[3].astype(np.int16),
            (4 - grid[4]).astype(np.int16), rng.random(n).astype(np.float32)]
    with transaction(con):
        insert_edges(con, 1, pa.Table.from_arrays([pa.array(c) for c in cols], schema=EDGE_SCHEMA))
    con.close()
    tables = stored_commits(db, 25)
    assert [t.num_rows for t in tables] == [40, 20]  # 20 edges a sentence, cut at the first sentence start from 25 edges on
    got = pa.concat_tables(tables)
    assert sorted(got.column("weight").to_pylist()) == sorted(cols[5].tolist())
    assert set(got.column("sentence_id").to_pylist()) == {0, 1, 2}
    out = tmp_path / "from-store.json"
    r = _run(["-m", "benchmarks.append", "--edges-from", str(db), "--commit-edges", "25", "--threads", "1",
              "--layouts", "flat,lists16", "--out", str(out)], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["layout"], row["stored_edges"], row["commits"]) for row in rows] == [("flat", n, 2), ("lists16", n, 2)]


def test_child_peak_rss_is_the_childs_own_not_the_parents():
    """Linux carries getrusage's ru_maxrss across fork and exec, so a child of a big parent
    reported the parent's size (the scale section once read 1,237 MiB at every size)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import run_child
    from benchmarks.sections import _PEAK_RSS

    ballast = bytearray(400 * 1024 * 1024)
    ballast[:: 4096] = b"\1" * len(ballast[:: 4096])  # touch every page: the parent holds 400 MiB
    code = _PEAK_RSS + "import json\nprint(json.dumps({'rss': peak_rss_mib()}))\n"
    child = run_child(code, {})["rss"]
    assert 1 < child < 200, child
    del ballast


def test_corpus_repeated_repeats_the_first_sentences(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import corpus_repeated

    src = tmp_path / "src.conllu"
    blocks = [f"# sent_id = s{i}\n1\tw{i}\tw\tX\tX\t_\t0\troot\t_\t_" for i in range(5)]
    src.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    out = corpus_repeated(src, 2, 3, tmp_path / "out.conllu").read_text(encoding="utf-8")
    assert [b for b in out.split("\n\n") if b.strip()] == [blocks[0], blocks[1]] * 3


def test_the_suite_removes_its_temporary_workdir(tmp_path):
    """Without --workdir the suite's databases go to a temporary folder, removed at exit (a full
    run leaves hundreds of MB there); a given --workdir is the user's and stays."""
    out = tmp_path / "r.json"
    r = _run(["-m", "benchmarks", "--quick", "--only", "classify", "--out", str(out)], ROOT, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["classify"]["skipped"]
    assert list((tmp_path / "tmp").iterdir()) == []
    r = _run(["-m", "benchmarks", "--quick", "--only", "classify", "--out", str(out), "--workdir",
              str(tmp_path / "mine")], ROOT, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0 and (tmp_path / "mine").is_dir()


def test_the_scale_slope_ratio_is_none_where_the_first_step_took_no_time():
    from benchmarks.sections import _slope_ratio

    rows = [{"sentences": n, "ingest_s": s} for n, s in ((125, 0.5), (500, 2.0), (2000, 8.0))]
    assert _slope_ratio("ingest_s", *rows) == pytest.approx(1.0)
    rows[0]["ingest_s"] = 2.5  # a warm-up: the 1x run slower than the 4x one
    assert _slope_ratio("ingest_s", *rows) is None


def test_the_table_shows_each_repetitions_own_ratio():
    """Best against best can pair passes far apart on a noisy machine; the table also gives each
    ingest against its own repetition's forward-only pass."""
    from benchmarks.__main__ import render

    x = {"end_to_end_sps": 250.0, "forward_only_sps": 340.0, "ratio": 250 / 340, "forward_to_last_map_sps": None,
         "ratio_of_pairs": [0.70, 0.74, 0.72], "ratio_median_of_pairs": 0.72}
    table = render({"ingestion": {"conllu": x}})
    assert "| ingestion conllu: each ingest / the forward-only pass before it (median; all) | 0.72 (0.70, 0.74, 0.72) |" \
        in table


def test_csv_floats_compares_pyarrows_and_numpys_float32_text(capsys):
    """benchmarks/csv_floats.py: the values whose CSV text comes from pyarrow, both signs; here
    the first 200,000 of each (all of them: 536 M, 0 differ)."""
    from benchmarks.csv_floats import compare, main

    checked, differ, examples = compare(limit=200_000)
    assert checked == 400_000 and differ == 0 and examples == []  # no integer among the smallest
    assert main(["--limit", "1000"]) == 0
    assert capsys.readouterr().out.startswith("2,000 float32 compared, 0 differ")
