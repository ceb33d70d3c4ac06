"""The one error root of headdb. The library raises these; only the CLI prints and exits."""

from __future__ import annotations

import contextvars
from pathlib import Path

# True while a CLI command runs: its messages name options as the command line spells them
# (``--top-k``), where the Python API's name its parameters (``top_k``). Set by headdb.cli.
CLI_NAMES: contextvars.ContextVar[bool] = contextvars.ContextVar("headdb_cli_names", default=False)


def shell_word(path: str | Path) -> str:
    """A path as a command that headdb suggests names it: quoted for a shell where it needs it
    (a store called ``my store.db``), so that the command can be pasted as it is printed."""
    import shlex

    text = str(path)
    if text.startswith("-"):  # read as an option otherwise
        text = "./" + text
    return shlex.quote(text)


def option(name: str) -> str:
    """How an error message names the option whose Python parameter is ``name``: ``--top-k``
    under the CLI, ``top_k`` from Python."""
    return "--" + name.replace("_", "-") if CLI_NAMES.get() else name


def flag(name: str) -> str:
    """A boolean option as the user turns it on: ``--dense`` under the CLI, ``dense=True`` from
    Python."""
    return option(name) if CLI_NAMES.get() else f"{name}=True"


def count(n: int, noun: str) -> str:
    """``n`` of ``noun`` for a message: "1 head", "2 heads", "1,000 sentences"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def given(name: str, value: str) -> str:
    """An option with a value as the user passes it: ``--format tsv`` under the CLI,
    ``format='tsv'`` from Python."""
    return f"{option(name)} {value}" if CLI_NAMES.get() else f"{name}={value!r}"


def yes_no(name: str, value, optional: bool = False) -> bool | None:
    """A boolean option as a bool (numpy's too; None where ``optional``): anything else is an
    InputError. Taken by truth, ``dense='no'`` made a dense run and ``write='no'`` wrote."""
    if value is None and optional:
        return None
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):  # without importing numpy
        value = bool(value)
    if not isinstance(value, bool):
        raise InputError(f"{option(name)} must be True or False, not {value!r}")
    return value


class HeaddbError(Exception):
    """Base class of every error headdb raises on purpose."""


class InputError(HeaddbError):
    """Bad user input (corpus, role file, option), located by ``path:line`` where known."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class CorpusError(InputError):
    """A corpus file that cannot be read as the format says."""


class RoleError(InputError):
    """A role file that breaks the role contract."""


class ModelError(HeaddbError):
    """A model that cannot be loaded or used for attention extraction."""


class DatabaseError(HeaddbError):
    """A database problem: locked, wrong schema, edited migration, missing run."""


class DatabaseLockedError(DatabaseError):
    """Another process holds the write lock on the database file."""


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest after its run was recorded: the run (marked interrupted, resumable),
    how many of its inputs are committed, and whether they are pairs (a TSV corpus or --pairs)."""

    def __init__(self, run_id: int, run_name: str, kept: int | None, pairs: bool = False):
        self.run_id, self.run_name, self.kept, self.pairs = run_id, run_name, kept, pairs
        super().__init__(f"run {run_id} interrupted")


class ClassifyInterrupted(KeyboardInterrupt):
    """Ctrl-C during a classify after its results were committed (while it wrote ``out``): the
    classification is stored, the file is not written."""

    def __init__(self, run_id: int, classification_id: int, out: str | Path | None):
        self.run_id, self.classification_id, self.out = run_id, classification_id, out
        super().__init__(f"classification {classification_id} of run {run_id} stored"
                         + ("" if out is None else f"; {out} not written"))
