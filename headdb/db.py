"""Connections, migrations and the small SQL helpers every module shares."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from headdb.errors import DatabaseError, DatabaseLockedError, InputError, shell_word, yes_no
from headdb.progress import takes_progress
from headdb.resources import migrations_dir

if TYPE_CHECKING:  # sqlalchemy loads only when engine() is called
    import sqlalchemy

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_PID = re.compile(r"\(PID (\d+)\)")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The numbered migration files, in order. Anything else in the folder is an error."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise DatabaseError(f"{path}: migration files are named NNNN_slug.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise DatabaseError(f"{directory}: migrations must be numbered 0001, 0002, ... without gaps")
    return found


def quote_ident(name: str) -> str:
    """Quote an SQL identifier; the only way identifiers reach SQL text."""
    return '"' + name.replace('"', '""') + '"'


def _open_in_this_process(path: Path) -> bool:
    """Whether this process holds a descriptor on the file: a connection of the user's or of
    headdb's own, whose DuckDB holds its lock there. Closing any descriptor of a file drops every
    POSIX lock the process holds on it, so reading the file's header then released DuckDB's lock,
    and another process could write the store under the user's connection (its rows were lost).
    False where the open descriptors cannot be listed (no /dev/fd)."""
    try:
        target = path.stat()
        descriptors = os.listdir("/dev/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            st = os.fstat(int(fd))
        except (OSError, ValueError):
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def is_duckdb_file(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts as a DuckDB database does: "DUCK" at byte 8, then the
    storage version, a little-endian 64-bit integer (NUL bytes; a text may hold "DUCK" there too,
    as "The big DUCK swam ." does). False where it cannot be read, or where this process has it
    open (:func:`_open_in_this_process`: reading it would drop the process's DuckDB lock on it)."""
    p = Path(path)
    if not p.is_file() or _open_in_this_process(p):
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[8:12] == b"DUCK" and b"\x00" in head[12:20]


def _check_duckdb_file(path: str) -> None:
    """A file that is not DuckDB's is named as such, before DuckDB opens it: for a SQLite file
    DuckDB tried to download its sqlite extension (nothing may be downloaded at run time), and
    its words for other files vary. (Turning extension autoloading off in the connection's
    config instead made every headdb call fail beside a user's own connection to the store:
    DuckDB refuses a second connection to a file with other settings.)"""
    p = Path(path)
    if path == ":memory:" or not p.is_file() or _open_in_this_process(p):
        return
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return  # DuckDB's open says what is wrong
    if head.startswith(b"SQLite format 3"):
        raise DatabaseError(f"{path}: a SQLite database, not a DuckDB one; headdb stores are DuckDB files")
    if len(head) >= 12 and head[8:12] != b"DUCK":
        from headdb.corpus import has_corpus_extension

        # `headdb classify corpus.conllu`: the corpus where the store goes
        hint = ("; it is named like a corpus: the store is the DuckDB file that `headdb ingest DB CORPUS` made"
                if has_corpus_extension(p) else "")
        raise DatabaseError(f"{path}: not a DuckDB database file{hint}")


#: a DuckDB "path" that names a service or another engine (md:, motherduck:, sqlite:, s3://...):
#: DuckDB would install and load an extension for it, from the network
_NOT_A_FILE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def check_store_arg(path: Any) -> None:
    """The store is named by its file's path: anything else (``init(con)`` created a file named
    ``<_duckdb.DuckDBPyConnection object at 0x...>``, ``runs(None)`` said to run ``headdb init
    None``) is an InputError."""
    if isinstance(path, (str, os.PathLike)):
        return
    hint = ("; an open connection goes only to the analysis functions, compare, accuracy and report"
            if isinstance(path, duckdb.DuckDBPyConnection) else "")
    raise InputError(f"the store is its file's path (a str or pathlib.Path), not {path!r}{hint}")


def _check_file_path(path: str) -> None:
    """A store path DuckDB can create or open as a file: not a folder, not a service's name, not in a
    missing folder."""
    if path != ":memory:" and Path(path).is_dir():  # DuckDB: 'IO Error: Could not read from file ...'
        raise DatabaseError(f"{path}: is a folder; a headdb store is a DuckDB file (name one in the folder, such as "
                            f"{shell_word(Path(path) / 'store.db')})")
    if path == ":memory:" or Path(path).exists():
        return
    if _NOT_A_FILE.match(path):
        raise DatabaseError(f"{path}: not a file path; a headdb store is a DuckDB file (DuckDB would fetch an "
                            "extension for this name)")
    if not Path(path).absolute().parent.is_dir():
        raise DatabaseError(f"{path}: no such folder {Path(path).absolute().parent}")


def _not_writable(place: Path) -> str | None:
    """Why this process cannot write ``place`` (a file, or a folder it would create files in), or
    None where it can."""
    mode = os.W_OK | (os.X_OK if place.is_dir() else 0)
    if os.access(place, mode, effective_ids=os.access in os.supports_effective_ids):
        return None
    if not hasattr(os, "statvfs"):  # Windows (a read-only file there failed on AttributeError)
        return "permission denied"
    try:
        if os.statvfs(place).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:  # pragma: no cover - it exists: the look at it that failed said enough
        pass
    return "permission denied"


def _check_writable_place(path: str) -> None:
    """A store that a writable connection opens must be writable, and so must its folder: DuckDB
    creates a new store there, and beside an existing one its write-ahead log (``DB.wal``, next
    to the path as given, a link's too) at the first commit. Without this an ingest failed only
    after its corpus was read and its model loaded, and classify after scoring the whole run,
    with DuckDB's ``Failed to commit: Cannot open file ".../DB.wal": Permission denied``."""
    if path == ":memory:":
        return
    store = Path(path)
    folder = store.absolute().parent
    read_cmds = "the commands that only read it (runs, summary, sql, accuracy, report, compare) work"
    if store.exists():
        why = _not_writable(store)
        if why:
            raise DatabaseError(f"{path}: the store file cannot be written ({why}); {read_cmds}")
        why = _not_writable(folder)
        if why:
            raise DatabaseError(f"{path}: its folder {folder} cannot be written ({why}), and DuckDB writes its log "
                                f"{store.name}.wal there as it changes the store; {read_cmds}, or copy the store "
                                "to a folder you can write")
    else:
        why = _not_writable(folder)
        if why:
            raise DatabaseError(f"{path}: cannot create the store: its folder {folder} cannot be written ({why})")


def _spill_elsewhere_if_unwritable(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """DuckDB spills a query larger than its memory to ``DB.tmp`` beside the store: in a folder
    this process cannot write, a read-only command's large query failed with ``Failed to create
    directory ".../DB.tmp": Permission denied``. There it spills to a folder of its own in the
    system's temp folder (``tempfile.gettempdir()``) instead, named for this process and
    connection, so that DuckDB creates it and removes it when the store is closed, and no two
    DuckDB instances share one (their spill files have the same names). The folders of processes
    that ended without closing theirs (killed) are removed then (:func:`_remove_stale_spills`);
    the folder's name holds the host, as its PID means nothing on another machine."""
    import tempfile
    import uuid

    if path == ":memory:" or not _not_writable(Path(path).absolute().parent):
        return
    _remove_stale_spills(Path(tempfile.gettempdir()))
    spill = Path(tempfile.gettempdir()) / f"headdb-spill-{os.getpid()}-{uuid.uuid4().hex[:12]}-{_host()}.tmp"
    try:
        con.execute("SET temp_directory = ?", [str(spill)])
    except duckdb.Error:  # pragma: no cover - an instance this process shares, which has spilled already
        pass


#: PID, and the host the process runs on (none in the folders of earlier versions)
_SPILL_FOLDER = re.compile(r"headdb-spill-(\d+)-[0-9a-f]{12}(?:-(.+))?\.tmp")


def _host() -> str:
    """This machine's name as a spill folder holds it: a temp folder shared by machines (a
    cluster's $TMPDIR on a network disk) holds other machines' processes, whose PIDs mean
    nothing here."""
    import socket

    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "_"  # a file name holds 255 bytes


#: a spill folder written to in the last hour is never taken as left over
_SPILL_QUIET_SECONDS = 3600


def _quiet_since(folder: Path) -> float:
    """Seconds since anything in ``folder`` (itself or a file in it) was last modified."""
    import time

    newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
    return time.time() - newest


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine: True only where that is known. On
    Windows nothing is known (there ``os.kill(pid, 0)`` sends the process group a Ctrl-C), nor
    of another user's process, or a PID out of range."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):  # running under another user, or cannot be checked
        return False
    return False


def _remove_stale_spills(temp: Path) -> None:
    """Remove the spill folders (:func:`_spill_elsewhere_if_unwritable`) in ``temp`` of this
    user's processes on this machine that no longer run: a process killed with a store open
    leaves its folder, and the spill files in it, behind. A folder of a running process, of
    another user or another machine (a temp folder on a shared disk), one that anything wrote to
    in the last hour (a container of the same host name, whose PIDs are its own, may share the
    temp folder), or one that cannot be removed is left as it is."""
    import shutil

    if os.name != "posix":  # Windows: no uid, and no PID to check (process_gone)
        return
    try:
        entries = list(temp.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _SPILL_FOLDER.fullmatch(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or match.group(2) not in (None, _host()):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid() \
                    or _quiet_since(entry) < _SPILL_QUIET_SECONDS:
                continue
        except OSError:  # gone meanwhile, or cannot be read
            continue
        if process_gone(int(match.group(1))):  # no such process: its folder is left over
            shutil.rmtree(entry, ignore_errors=True)


def _open(path: str | Path, read_only: bool, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    check_store_arg(path)
    path = str(path)
    _check_file_path(path)
    if read_only and path != ":memory:" and not Path(path).exists():
        raise DatabaseError(f"{path}: no such database (create it with `headdb init {shell_word(path)}`)")
    _check_duckdb_file(path)
    if not read_only:
        _check_writable_place(path)
    try:
        con = duckdb.connect(path, read_only=read_only, config=config or {})
        # no DuckDB progress bar on stdout (it would mix into CSV/JSON output); headdb draws its own on stderr
        con.execute("SET enable_progress_bar = false")
        if read_only:
            _spill_elsewhere_if_unwritable(con, path)
        return con
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            pid = _LOCK_PID.search(text)
            who = f" by process {pid.group(1)}" if pid else ""
            if "read-only mode" in text:  # DuckDB's hint: the holder only reads, so it holds a shared lock
                raise DatabaseLockedError(
                    f"{path}: the database is locked{who}, which has it open for reading; "
                    "writing needs it alone: wait for that process to close it"
                ) from None
            raise DatabaseLockedError(
                f"{path}: the database is locked{who}, which has it open for writing; "
                "wait for it to finish (read-only commands work once no writer holds it)"
            ) from None
        if "File is already open in" in text:  # Windows: a sharing violation, the holder's mode unknown
            pid = _LOCK_PID.search(text)
            who = f" by process {pid.group(1)}" if pid else ""
            raise DatabaseLockedError(
                f"{path}: the database is locked{who}, which has it open; wait for that process to close it"
            ) from None
        raise DatabaseError(f"{path}: {text.splitlines()[0]}") from None
    except duckdb.ConnectionException as exc:
        if "different configuration" in str(exc):
            raise DatabaseError(
                f"{path}: this process already has the database open with other settings (a "
                "headdb.engine(), a read-only or a writable duckdb connection); close it first "
                "(engine.dispose(), con.close())"
            ) from None
        raise DatabaseError(f"{path}: {str(exc).splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise DatabaseError(f"{path}: {str(exc).splitlines()[0]}") from None


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C: Python's KeyboardInterrupt, or a DuckDB statement it interrupted (DuckDB's Python
    client takes the signal and raises ``RuntimeError("Query interrupted")`` instead)."""
    return (isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException))
            or (type(exc) is RuntimeError and str(exc).strip() == "Query interrupted"))


def interruptible(con: duckdb.DuckDBPyConnection, work: Callable[[], Any]) -> Any:
    """``work()`` (statements on ``con``) on a worker thread while this thread waits, so that
    Ctrl-C stops it: DuckDB's client looks for the signal only between the tasks of a statement,
    and some operators run one task for as long as they like (an endless recursive CTE, a cross
    join in a scalar subquery: a role's SQL never stopped, and the process had to be killed).
    On KeyboardInterrupt (SIGINT; SIGTERM in the CLI) ``con.interrupt()`` is called until the
    worker has returned, which DuckDB's operators do check, and the KeyboardInterrupt goes on.
    A second Ctrl-C meanwhile stops waiting; the worker then ends with its statement, and
    :func:`close_connection` leaves ``con`` to it. Off the main thread, where no signal arrives,
    ``work`` runs where it is called. The hand-off costs a thread's start (0.1 ms)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict[str, Any] = {}
    # its own signal of the end: Thread.join() interrupted by Ctrl-C marks a thread that is still
    # running as stopped (Python 3.11's threading releases the thread's own lock for it), so that
    # is_alive() says False, and the process went on to exit under a statement still running
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as it is
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="headdb-role-sql", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        while not done.wait(0.05):  # interrupted between two statements, the next one is too
            con.interrupt()
        outcome.clear()
        raise
    if "error" in outcome:
        error = outcome.pop("error")
        try:
            raise error
        finally:
            del error
    return outcome["value"]


def close_connection(con: duckdb.DuckDBPyConnection) -> None:
    """``con.close()``, but a connection still busy with a statement on another thread (one that
    a second Ctrl-C stopped waiting for, :func:`interruptible`) is left to that thread: DuckDB
    refuses to close it, and its error would hide the interrupt."""
    try:
        con.close()
    except duckdb.ResourceInUseException:
        pass


def check_writable(path: str | Path) -> None:
    """Fail now, with the locked message, if another process holds an existing database.

    Long jobs call this before their slow start (reading a corpus, loading a model); a missing
    file is fine (it will be created) and is not created here. A store of a newer schema, a
    non-DuckDB file, a missing folder and a store or folder this process cannot write (a new
    store's folder included) fail here too.
    """
    _check_file_path(str(path))
    if str(path) == ":memory:" or not Path(path).exists():
        _check_writable_place(str(path))
        return
    con = _open(path, read_only=False)  # a missing folder, another file type, the lock
    try:
        version = _applied_version(con, path)
    finally:
        con.close()
    latest = len(list_migrations())
    if version is not None and version > latest:
        raise DatabaseError(f"{path}: {_newer_schema(version, latest)}")


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version: 0 for a file without headdb's tables."""
    return _applied_version(con) or 0


def _applied_version(con: duckdb.DuckDBPyConnection, path: str | Path | None = None) -> int | None:
    """The highest migration applied, None without a schema_migrations table; another tool's
    table of that name (golang-migrate, dbmate: version and dirty) is an error, not a version."""
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = 'schema_migrations'").fetchall()}
    if not columns:
        return None
    if not {"version", "name", "checksum"} <= columns:
        raise DatabaseError(f"{f'{path}: ' if path else ''}not a headdb database (its table schema_migrations is "
                            "another tool's); keep the headdb store in a file of its own")
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the migrations this database lacks, each in its own transaction.

    Returns the versions applied. An applied migration whose file changed since is an error,
    and so is a database newer than this headdb.
    """
    migrations = list_migrations() if migrations is None else migrations
    table = _applied_version(con) is not None
    applied = {v: c for v, c in con.execute("SELECT version, checksum FROM schema_migrations").fetchall()} \
        if table else {}
    known = {m.version for m in migrations}
    newer = sorted(set(applied) - known)
    if newer:
        raise DatabaseError(_newer_schema(max(newer), max(known, default=0)))
    done: list[int] = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise DatabaseError(
                    f"{m.path}: migration {m.version:04d} was edited after it was applied "
                    "(checksum differs); migrations are forward-only: add a new one instead"
                )
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            # in the first migration's transaction: a failed first migration (a file with tables
            # of its own named like headdb's) leaves no headdb table behind
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, checksum VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
            )
            con.execute(m.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                [m.version, m.name, m.checksum],
            )
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise DatabaseError(f"{m.path}: migration failed: {str(exc).splitlines()[0]}") from exc
        done.append(m.version)
    return done


def connect(path: str | Path, read_only: bool = False, *, migrate_schema: bool = True,
            existing: bool = False, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """Open a headdb database; a writable one is created or upgraded in place.

    A read-only connection never changes the file, so it requires a current schema, and so does
    a writable one with ``existing`` (for commands that change a store but must not create one,
    or install headdb's tables into another DuckDB file, or upgrade it unasked: drop, compact,
    ``sql --write``).
    """
    check_store_arg(path)
    if existing and str(path) != ":memory:" and not Path(path).exists():
        _check_file_path(str(path))  # a missing folder is named as such: `headdb init` could not create it
        raise DatabaseError(f"{path}: no such database (create it with `headdb init {shell_word(path)}`)")
    con = _open(path, read_only, config)
    if read_only or existing:
        try:
            _require_current(con, path)
        except Exception:
            con.close()
            raise
    elif migrate_schema:
        try:
            migrate(con)
        except DatabaseError as exc:
            con.close()
            text = str(exc)
            raise DatabaseError(text if text.startswith(f"{path}:") else f"{path}: {text}") from None
        except Exception:
            con.close()
            raise
    return con


def _require_current(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    version = _applied_version(con, path) or 0
    latest = len(list_migrations())
    if version == 0:
        raise DatabaseError(f"{path}: not a headdb database (run `headdb init {shell_word(path)}`)")
    if version < latest:
        raise DatabaseError(f"{path}: schema version {version} is older than {latest}; "
                            f"upgrade it with `headdb init {shell_word(path)}`")
    if version > latest:
        raise DatabaseError(f"{path}: {_newer_schema(version, latest)}")


def _newer_schema(version: int, known: int) -> str:
    return f"the database has schema version {version}, newer than this headdb knows ({known}); upgrade headdb"


def connect_restricted(path: str | Path, memory_limit_mb: int | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection that cannot reach files, network or extensions: role SQL runs here.
    ``memory_limit_mb`` caps DuckDB's memory on it (its cache of the blocks it reads included).

    Its settings belong to the DuckDB instance, and one process shares an instance between the
    connections to a file that have the same settings: set on a connection of DuckDB's defaults,
    they locked a user's own connection to the store as well (external access off, the
    configuration locked, and every later headdb call on it failing). So this connection has
    settings of its own from the start: beside a connection the user holds, it is refused with
    a clear message instead (close that connection first)."""
    con = connect(path, read_only=True, config={"enable_external_access": False})
    if memory_limit_mb is not None:
        con.execute("SET memory_limit = ?", [f"{int(memory_limit_mb)}MiB"])
    con.execute("SET lock_configuration = true")
    return con


#: DuckDB's memory limit for headdb's long reads of a run (classify's scoring, accuracy's ranges
#: of sentences), in MiB per thread, at least MEMORY_MB_MIN. Without one DuckDB keeps the blocks
#: it reads cached up to 80% of RAM, so the memory grew with the run: classification, 1,651 MiB
#: peak RSS for 8,000 sentences (120 M edges) on 2 cores, 1,214 MiB with 768 MiB in 11.8 against
#: 12.0 s, 990 MiB with 512 MiB but 5% slower, and 256 MiB spilled (19 s); the EWT store (2,001
#: sentences) classifies in the same time with or without it (docs/benchmarks.md).
MEMORY_MB_MIN = 768
MEMORY_MB_PER_THREAD = 96


def memory_limit_mb() -> int:
    return max(MEMORY_MB_MIN, MEMORY_MB_PER_THREAD * (os.cpu_count() or 1))


def connect_capped(path: str | Path, memory_limit_mb: int) -> duckdb.DuckDBPyConnection:
    """A read-only connection with DuckDB's memory (its cache of the blocks it reads included)
    capped at ``memory_limit_mb``, where it has a DuckDB instance of its own. Where this process
    has the file open already (a connection of the user's), DuckDB shares that connection's
    instance, and its settings, with this one: the cap is then left out rather than changed
    under the other connection (unlike :func:`connect_restricted`, nothing is refused)."""
    check_store_arg(path)
    shared = _open_in_this_process(Path(path))
    con = connect(path, read_only=True)
    if not shared:
        con.execute("SET memory_limit = ?", [f"{int(memory_limit_mb)}MiB"])
    return con


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data: Any) -> Iterator[None]:
    """``data`` (an Arrow table or a DataFrame) visible to ``con``'s SQL as ``name`` for the block.

    Where the block fails inside a transaction, DuckDB has aborted the transaction and refuses
    the unregister ("Current transaction is aborted"): the block's own error, a full disk or an
    interrupted query, is the one that propagates (the name goes with the rollback's connection
    state or the next register)."""
    con.register(name, data)
    try:
        yield
    except BaseException:
        try:
            con.unregister(name)
        except duckdb.Error:
            pass
        raise
    con.unregister(name)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit when the block ends, roll back on any exception. Where the
    ROLLBACK fails too (a connection closed or invalidated by a fatal error), the block's own
    error is the one that propagates."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    con.execute("COMMIT")


def init(path: str | Path) -> list[int]:
    """Create the database or upgrade its schema; returns the migration versions applied."""
    con = _open(path, read_only=False)
    try:
        return migrate(con)
    except DatabaseError as exc:
        text = str(exc)
        raise DatabaseError(text if text.startswith(f"{path}:") else f"{path}: {text}") from None
    finally:
        con.close()


#: Seconds between two looks at the size of compact's copy (its progress).
COMPACT_POLL_S = 0.25


@contextmanager
def _watch_size(file: Path, total: int, progress) -> Iterator[None]:
    """While the body runs, ``progress(bytes of file so far, total)`` every COMPACT_POLL_S on a
    thread of its own; ``progress(total, total)`` once it has ended without an error."""
    import threading

    if progress is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(COMPACT_POLL_S):
            try:
                size = file.stat().st_size
            except OSError:  # not created yet
                size = 0
            # short of the end until it comes: the copy may outgrow the estimate (its file header)
            progress(max(0, min(size, total - 1)), total)

    thread = threading.Thread(target=watch, name="headdb-compact-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    progress(total, total)


@takes_progress("compacting", in_bytes=True)
def compact(path: str | Path, progress: Callable[[int, int], None] | bool | None = None) -> tuple[int, int]:
    """Rewrite the store into a file without the space of deleted rows; returns its size in
    bytes before and after.

    DuckDB keeps the blocks that deletes free and reuses them for later writes, so a store does
    not shrink by itself. This copies every table, view and sequence into a new file next to it
    (``COPY FROM DATABASE``), checks that each table has as many rows as before, and only then
    puts the copy in the store's place. On any error the store is left as it was.

    ``progress(written, total)``, in bytes, is called as the copy grows (from a thread of its
    own, every ``COMPACT_POLL_S`` seconds, and once at the end): ``total`` is the space the
    store's data takes (its used blocks), about what the copy will take. DuckDB reports no
    progress of its own for this copy. True draws a bar on stderr.
    """
    import os

    check_store_arg(path)
    path = Path(path)
    if not path.exists():
        raise DatabaseError(f"{path}: no such database")
    target = path.resolve()  # a link to the store: the store is compacted, the link stays a link
    tmp = target.with_name(target.name + ".compact-tmp")
    wal = target.with_name(target.name + ".wal")
    if _open_in_this_process(target):  # a connection of DuckDB's defaults would share it and go on with the old file
        raise DatabaseError(f"{path}: this process has the store open (a duckdb connection or a headdb.engine()); "
                            "compact puts a new file in its place, and what that connection wrote afterwards "
                            "would be lost: close it first (con.close(), engine.dispose())")
    before = target.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    con = connect(path, existing=True)  # writable: no other process has the file open while it is copied
    _remove_copy(tmp)  # a killed compact's, only now, with the lock held: another compact may be writing it
    try:
        con.execute("CHECKPOINT")
        source = con.execute("SELECT current_database()").fetchone()[0]
        used = con.execute("SELECT used_blocks * block_size FROM pragma_database_size() WHERE database_name = ?",
                           [source]).fetchone()[0]
        con.execute("ATTACH ? AS headdb_compact", [str(tmp)])
        try:
            with _watch_size(tmp, int(used), progress):
                con.execute(f"COPY FROM DATABASE {quote_ident(source)} TO headdb_compact")
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'",
                [source]).fetchall()]
            for t in tables:
                counts = [con.execute(f"SELECT count(*) FROM {quote_ident(db_name)}.main.{quote_ident(t)}").fetchone()[0]
                          for db_name in (source, "headdb_compact")]
                if counts[0] != counts[1]:  # pragma: no cover - DuckDB's copy is complete
                    raise DatabaseError(f"{path}: the compact copy of {t} has {counts[1]} rows, not {counts[0]}; "
                                        "the store is unchanged")
            con.execute("CHECKPOINT headdb_compact")
        finally:
            con.execute("DETACH headdb_compact")
    except BaseException as exc:
        con.close()
        _give_up_copy(path, tmp, exc)
        raise
    # The swap under locks: the store's own (con) until the old file is gone, and the copy's
    # before it takes the store's name. Closing the store first let another process take the
    # old file between the close and the swap: its commits went into the file that was then
    # replaced (lost without an error).
    try:
        copy = duckdb.connect(str(tmp), read_only=True)  # read-only: it writes no WAL beside the store
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    try:
        _same_owner_and_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        copy.close()
        _give_up_copy(path, tmp, exc)
        raise
    finally:
        con.close()
    copy.close()
    return before, target.stat().st_size


def _remove_copy(tmp: Path) -> None:
    """A compact's copy and its log (a failed write leaves DB.compact-tmp.wal beside it)."""
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _give_up_copy(path: Path, tmp: Path, exc: BaseException) -> None:
    """After ``exc``, the copy goes; a DuckDB or file system error (not an interrupt) is raised
    again as one that says what became of the store and of its copy: a full disk said only
    DuckDB's `IO Error: Could not write file ".../DB.compact-tmp": No space left on device`. Any
    other exception is left to the caller to raise."""
    _remove_copy(tmp)
    if isinstance(exc, (duckdb.Error, OSError)) and not interrupted(exc):
        raise DatabaseError(_compact_failed(path, tmp, exc)) from None


def _compact_failed(path: Path, tmp: Path, exc: BaseException) -> str:
    """A failed compact's error, saying what became of the store and of its copy."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    copy = f"its temporary copy {tmp} was removed" if not tmp.exists() else f"its temporary copy {tmp} is left"
    return f"{path}: cannot compact the store: {text}; the store is unchanged, and {copy}"


def _same_owner_and_mode(store: Path, copy: Path) -> None:
    """The copy that replaces a store gets its permissions (a 0640 store stays private) and, where
    this process may set them, its owner and group."""
    import os
    import stat

    st = store.stat()
    os.chmod(copy, stat.S_IMODE(st.st_mode))
    if not hasattr(os, "chown"):  # Windows: no owner to set (compact failed there on AttributeError)
        return
    try:
        os.chown(copy, st.st_uid, st.st_gid)
    except PermissionError:  # not root: the copy is the caller's own, as the store was
        pass


def engine(path: str | Path, read_only: bool = True) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine (duckdb-engine) on the store, for pandas, notebooks and BI tools.

    Each of its connections has the built-in roles' score views (``scores_<role>``,
    ``sieve_<role>``), as ``headdb sql`` has. ``read_only=False`` writes (an existing store).
    While the engine holds a connection (until ``engine.dispose()``), DuckDB's lock holds too:
    other processes cannot write the store (a read-only engine) or open it at all (a writable
    one), and in this process headdb calls that open the store with other settings are refused.
    Tables and views reflect (``sqlalchemy.inspect``, ``pandas.read_sql_table``); primary keys
    do not (duckdb-engine reports none).
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import URL

    read_only = yes_no("read_only", read_only)
    try:  # the same clear errors as the rest of headdb; a writable engine needs a store, too
        connect(path, read_only=read_only, existing=True).close()
    except DatabaseError as exc:
        # an engine of this process holds the file already (duckdb-engine opens it with its own
        # settings): it was checked when that engine was made
        if "already has the database open" not in str(exc):
            raise
    # the path as the URL's database, not pasted into its text ('?', '#' and '%' are URL syntax there)
    eng = create_engine(URL.create("duckdb", database=str(Path(path))), connect_args={"read_only": read_only})

    @event.listens_for(eng, "connect")
    def _score_views(dbapi_connection, connection_record) -> None:  # TEMP views live per connection
        from headdb.scores import register_views

        # as on headdb's own connections: DuckDB draws its bar on stdout, into what a script writes there
        dbapi_connection.execute("SET enable_progress_bar = false")
        register_views(dbapi_connection)

    _reflect_temp_views(eng.dialect)
    return eng


#: DuckDB's names of the TEMP score views' column types, as SQLAlchemy's PostgreSQL names have them
_PG_TYPE_NAMES = {"double": "double precision", "float": "real"}


def _reflect_temp_views(dialect) -> None:
    """The columns of the TEMP views ``scores_<role>`` and ``sieve_<role>`` for SQLAlchemy's
    reflection on ``dialect`` (an engine's own). duckdb-engine lists them among the view names
    but reads columns through ``pg_catalog``, whose ``pg_namespace`` lacks the temp schema:
    ``get_columns('scores_local')``, ``pandas.read_sql_table('scores_local', engine)`` and
    ``MetaData().reflect(engine, views=True)`` (what a BI tool does with every view it lists)
    failed with NoSuchTableError. Their columns come from ``information_schema`` instead."""
    from sqlalchemy import text
    from sqlalchemy import types as sqltypes
    from sqlalchemy.engine.reflection import ObjectKind

    plain = dialect.get_multi_columns

    def get_multi_columns(connection, schema=None, filter_names=None, scope=None, kind=None, **kw):
        found = list(plain(connection, schema=schema, filter_names=filter_names, scope=scope, kind=kind, **kw))
        if schema not in (None, "main") or (kind is not None and not kind & ObjectKind.VIEW):
            return found  # tables only (an inspector's get_multi_columns() by default): no view
        have = {key[-1] for key, _ in found}
        rows = connection.execute(text(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_catalog = 'temp' AND table_schema = 'main' ORDER BY table_name, ordinal_position"))
        temp: dict[str, list] = {}
        for table, column, data_type, nullable in rows:
            if table in have or (filter_names is not None and table not in filter_names):
                continue
            name = data_type.lower()
            kind_of = dialect.ischema_names.get(_PG_TYPE_NAMES.get(name, name), sqltypes.NullType)
            temp.setdefault(table, []).append({"name": column, "type": kind_of(), "nullable": nullable == "YES",
                                               "default": None, "autoincrement": False, "comment": None})
        return found + [((schema, table), columns) for table, columns in temp.items()]

    dialect.get_multi_columns = get_multi_columns
