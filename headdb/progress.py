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


def takes_progress(label: str, in_bytes: bool = False):
    """Decorator of an API function with a ``progress(done, total)`` argument: it takes True too
    (:func:`steps_bar` on stderr, as ``headdb.ingest(progress=True)`` draws its bar) and False
    (none: it failed with "'bool' object is not callable"); anything else but a callable or None
    is refused by name."""
    import functools
    import inspect

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            progress = bound.arguments.get("progress")
            if progress is None or callable(progress):
                return fn(*args, **kwargs)
            if progress is not True and progress is not False:
                from headdb.errors import InputError

                raise InputError(f"progress must be a callable progress(done, total), True (a bar on stderr) or "
                                 f"False, not {progress!r}")
            with contextlib.ExitStack() as stack:
                bound.arguments["progress"] = stack.enter_context(steps_bar(label, in_bytes)) if progress else None
                return fn(*bound.args, **bound.kwargs)

        return call

    return wrap
