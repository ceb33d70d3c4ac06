"""Progress of long work counted in steps: the bar the commands draw, and what the Python API's
``progress`` takes (a callable ``progress(done, total)``, True for that bar on stderr, or
False / None for none)."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def steps_bar(label: str, in_bytes: bool = False):
    """A progress bar on stderr for work counted in steps (``in_bytes``: in bytes): yields a
    ``progress(done, total)`` callable. Shown only once the work has more than one step and is
    not done at the first call, and gone once the last step is done (a report goes on to draw
    its figures)."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    bar = Progress(TextColumn(label), BarColumn(), DownloadColumn() if in_bytes else MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None and total > 1 and done < total:
            bar.start()
            task = bar.add_task(label, total=total)
        if task is not None:
            bar.update(task, completed=done)
            if done >= total:
                bar.stop()

    try:
        yield progress
    finally:
        bar.stop()


def wants_bar(progress) -> bool:
    """Whether an API call's ``progress`` is not already a callable or None (True, False, or a
    mistake): the call then runs again inside :func:`api_progress`."""
    return progress is not None and not callable(progress)


@contextlib.contextmanager
def api_progress(progress, label: str, in_bytes: bool = False):
    """The ``progress(done, total)`` callable (or None) for an API call's ``progress`` argument:
    True draws :func:`steps_bar` (``headdb.ingest(progress=True)`` draws its bar too), False or
    None none; anything else is refused."""
    from headdb.errors import InputError

    if progress is True:
        with steps_bar(label, in_bytes) as bar:
            yield bar
    elif progress is False or progress is None:
        yield None
    elif callable(progress):
        yield progress
    else:
        raise InputError(f"progress must be a callable progress(done, total), True (a bar on stderr) or False, "
                         f"not {progress!r}")
