"""Running the `headdb` CLI in-process, as the entry point does (shared by the CLI tests)."""

from __future__ import annotations

import sys
from pathlib import Path


def run_main(capsys, monkeypatch, *args: str | Path) -> tuple[int, str, str]:
    """``headdb ARGS`` through ``headdb.cli.main`` and its error handler: exit code, stdout, stderr."""
    from headdb import cli

    monkeypatch.setattr(sys, "argv", ["headdb", *map(str, args)])
    monkeypatch.setitem(cli._state, "debug", False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: no truncated cells
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """The same, with the arguments as one list."""
    return run_main(capsys, monkeypatch, *args)


def read_export(path: Path):
    """A file written by ``headdb.query.export`` (.csv, .json or .parquet) read back as a DataFrame."""
    import json

    import pandas as pd

    suffix = Path(path).suffix
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".json":
        return pd.DataFrame(json.loads(Path(path).read_text()))
    return pd.read_parquet(path)
