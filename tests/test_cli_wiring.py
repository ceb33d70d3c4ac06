"""Each command-line option reaches the API parameter it names, with the API's own default where
the option is left out: an option passed to another parameter, or a default of the command that
differs from the API's, would change results without an error."""

from __future__ import annotations

import importlib
import inspect
import sys

from headdb.errors import InputError
from tests.cli_helpers import run_cli

ingest_module = importlib.import_module("headdb.ingest")
classify_module = importlib.import_module("headdb.classify")


def _recorder(calls: list):
    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        raise InputError("stopped here")

    return fake


def _defaults(fn, keyword_only: bool = False) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty
            and (p.kind is inspect.Parameter.KEYWORD_ONLY or not keyword_only)}


def test_every_ingest_option_reaches_its_parameter(tmp_path, monkeypatch, capsys):
    calls: list = []
    real = ingest_module.ingest
    monkeypatch.setattr(ingest_module, "ingest", _recorder(calls))
    db, corpus = tmp_path / "s.db", tmp_path / "c.txt"
    code, _, err = run_cli(["ingest", db, corpus, "--format", "text", "--pairs", "--model", "some-model",
                            "--top-k", "5", "--min-mass", "0.75", "--dense", "--weight-bits", "16", "--truncate",
                            "--max-length", "40", "--limit", "7", "--batch-size", "3", "--device", "cuda:1",
                            "--dtype", "bfloat16", "--run-name", "mine", "--parser", "my_parser",
                            "--parse-processes", "2", "--download", "--new-run", "-q"], monkeypatch, capsys)
    assert (code, err) == (1, "error: stopped here\n")
    (args, kwargs), = calls
    assert args == (db, corpus)
    assert kwargs == dict(format="text", pairs=True, model="some-model", top_k=5, min_mass=0.75, dense=True,
                          weight_bits=16, truncate=True, max_length=40, limit=7, batch_size=3, device="cuda:1",
                          dtype="bfloat16", run_name="mine", parser="my_parser", parse_processes=2, download=True,
                          new_run=True, progress=False)
    # left out, each option is the API's default (progress: a bar only on a terminal, never with -q)
    calls.clear()
    code, _, _ = run_cli(["ingest", db], monkeypatch, capsys)
    (args, kwargs), = calls
    assert args == (db, None) and kwargs == {**_defaults(real, keyword_only=True), "progress": False}
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for quiet, progress in (([], True), (["-q"], False), (["--quiet"], False)):
        calls.clear()
        run_cli(["ingest", db, *quiet], monkeypatch, capsys)
        assert calls[0][1]["progress"] is progress, quiet


def test_every_classify_option_reaches_its_parameter(tmp_path, monkeypatch, capsys):
    calls: list = []
    real = classify_module.classify
    monkeypatch.setattr(classify_module, "classify", _recorder(calls))
    db, roles_dir, out = tmp_path / "s.db", tmp_path / "roles", tmp_path / "t.csv"
    code, _, err = run_cli(["classify", db, "--run", "base", "--roles", "local,obj", "--roles-dir", roles_dir,
                            "--tau", "2.5", "--alpha", "0.01", "--correction", "holm", "--out", out, "-q"],
                           monkeypatch, capsys)
    assert (code, err) == (1, "error: stopped here\n")
    (args, kwargs), = calls
    assert args == (db, "base", "local,obj", roles_dir)
    assert kwargs == dict(tau=2.5, alpha=0.01, correction="holm", out=out, progress=None)
    calls.clear()
    run_cli(["classify", db], monkeypatch, capsys)
    (args, kwargs), = calls
    defaults = _defaults(real)
    assert args == (db, defaults["run"], defaults["roles"], defaults["roles_dir"])
    assert kwargs == {k: defaults[k] for k in ("tau", "alpha", "correction", "out")} | {"progress": None}


def test_the_analysis_commands_pass_each_option_and_quiet(tmp_path, monkeypatch, capsys):
    """compare, accuracy and report: each option to its parameter; on a terminal a bar unless -q."""
    calls: list = []
    for module, name in (("headdb.compare", "compare"), ("headdb.accuracy", "accuracy"), ("headdb.report", "report")):
        monkeypatch.setattr(importlib.import_module(module), name, _recorder(calls))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    db, out = tmp_path / "s.db", tmp_path / "rep"

    def called(*args):
        calls.clear()
        code, _, err = run_cli(list(args), monkeypatch, capsys)
        assert (code, err) == (1, "error: stopped here\n"), (args, err)
        return calls[0]

    assert called("compare", db, "a", "b", "--roles", "local", "--correction", "holm", "--alpha", "0.01") == \
        ((db, "a", "b"), dict(roles="local", correction="holm", alpha=0.01))
    args, kwargs = called("accuracy", db, "--run", "base", "--min-count", "3")
    assert args == (db, "base") and kwargs["min_count"] == 3 and callable(kwargs["progress"])
    assert called("accuracy", db, "-q")[1]["progress"] is None
    args, kwargs = called("report", db, "--out", out, "--run", "base", "--compare", "tuned", "--roles", "local",
                          "--correction", "holm", "--alpha", "0.01", "--no-accuracy")
    assert args == (db, "base", out) and callable(kwargs.pop("progress"))
    assert kwargs == dict(compare="tuned", roles="local", correction="holm", alpha=0.01, accuracy=False)
    args, kwargs = called("report", db, "--out", out, "--accuracy", "-q")
    assert kwargs["accuracy"] is True and kwargs["progress"] is None


def test_drop_deletes_with_yes_only_and_compacts_with_compact(tmp_path, monkeypatch, capsys):
    import pandas as pd

    dropped: list = []
    compacted: list = []

    def drop_run(db, run, dry_run):
        dropped.append((db, run, dry_run))
        counts = pd.DataFrame({"table": ["edge_store"], "rows": [5]})
        counts.attrs["run_id"] = 1
        return counts

    def compact(db, progress=None):
        compacted.append((db, progress))
        return 2_000_000, 1_000_000

    monkeypatch.setattr(importlib.import_module("headdb.store"), "drop_run", drop_run)
    monkeypatch.setattr(importlib.import_module("headdb.db"), "compact", compact)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    db = tmp_path / "s.db"
    code, out, _ = run_cli(["drop", db, "1", "--compact"], monkeypatch, capsys)
    assert code == 0 and dropped == [(db, "1", True)] and compacted == [] and "nothing deleted" in out
    code, out, _ = run_cli(["drop", db, "1", "--yes"], monkeypatch, capsys)
    assert code == 0 and dropped[-1] == (db, "1", False) and compacted == [] and "deleted run 1" in out
    code, out, _ = run_cli(["drop", db, "1", "--yes", "--compact"], monkeypatch, capsys)
    assert code == 0 and len(compacted) == 1 and callable(compacted[0][1]) and "2.0 MB -> 1.0 MB" in out
    code, _, _ = run_cli(["drop", db, "1", "--yes", "--compact", "-q"], monkeypatch, capsys)
    assert code == 0 and compacted[-1] == (db, None)
    code, _, _ = run_cli(["compact", db, "-q"], monkeypatch, capsys)
    assert code == 0 and compacted[-1] == (db, None)
    code, _, _ = run_cli(["compact", db], monkeypatch, capsys)
    assert code == 0 and callable(compacted[-1][1])


def test_sql_passes_write_and_params_to_every_way_it_reads(tmp_path, monkeypatch, capsys):
    """--write and --param reach the table (sql_head, or sql with --max-rows 0), csv and json
    (write_sql) and --out (export_sql, with a count of rows on a terminal unless -q)."""
    calls: list = []
    query_module = importlib.import_module("headdb.query")
    for name in ("sql", "sql_head", "write_sql", "export_sql"):
        def fake(*args, _name=name, **kwargs):
            calls.append((_name, args, kwargs))
            raise InputError("stopped here")

        monkeypatch.setattr(query_module, name, fake)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    db, out = tmp_path / "s.db", tmp_path / "x.csv"
    for extra, name in (([], "sql_head"), (["--max-rows", "0"], "sql"), (["-f", "csv"], "write_sql"),
                        (["-f", "json"], "write_sql"), (["--out", out], "export_sql"),
                        (["--out", out, "-q"], "export_sql")):
        for write in (False, True):
            calls.clear()
            code, _, err = run_cli(["sql", db, "SELECT $x", "--param", "x=1", *extra, *(["--write"] if write else [])],
                                   monkeypatch, capsys)
            assert (code, err) == (1, "error: stopped here\n"), (extra, err)
            (called, args, kwargs), = calls
            assert called == name and {"x": "1"} in args and kwargs.get("write", False) is write, (extra, write)
            if name == "export_sql":
                assert (kwargs["progress"] is None) is ("-q" in extra)
