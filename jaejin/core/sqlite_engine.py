"""SQLite as a server database: WAL, BEGIN IMMEDIATE, and writers that take turns promptly.

SQLite lets one writer at a time in, and a writer that finds the database busy sleeps in
SQLite's busy handler: 1, 2, 5, 10 ... 100 ms between tries, so whoever polls at the right
moment wins and the others wait far longer than the transaction they wait for. Jaejin's writers
queue instead: the threads of one process on a lock of their own (`_WriteTurns`), the processes
on `flock`ed files beside the database (`_WriterFileLock`), each woken as soon as the previous
writer's COMMIT or ROLLBACK has really happened (`_SQLiteConnection`). `build_sqlite_engine` is
what `jaejin.core.database.build_engine` returns for a `sqlite:` URL.
"""

from __future__ import annotations

import logging
import os
import select
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary, finalize

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

try:
    import fcntl
except ModuleNotFoundError:  # Windows: writers of several processes wait as SQLite makes them
    _HAS_FLOCK = False
else:
    _HAS_FLOCK = True

_logger = logging.getLogger(__name__)

#: How long a writer waits for another by default (SQLite's busy timeout is set the same).
SQLITE_WAIT_SECONDS = 15.0
#: Execution option of `jaejin.core.database.read_connection` on SQLite: each statement its own
#: read, no BEGIN IMMEDIATE, no write turn.
AUTOCOMMIT_READ = "jaejin_autocommit_read"


def build_sqlite_engine(url: str, *, pool_size: int, wait_seconds: float = SQLITE_WAIT_SECONDS,
                        writer_lock_file: bool = True) -> Engine:
    """An engine for a `sqlite:` URL. A writer waits up to `wait_seconds` for others (then
    "database is locked"); `writer_lock_file=False` leaves the waiting for other processes to
    SQLite's busy handler (the baseline of benchmarks/bench_sqlite_writers.py)."""
    database = make_url(url).database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in url
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # A file database gets the same pool as PostgreSQL: with SQLAlchemy's default (5 kept,
    # 10 more closed on return) 16 concurrent clients kept reopening connections, each
    # open paying for its PRAGMAs.
    pool_options: dict[str, Any] = (
        {} if in_memory else {"pool_size": pool_size, "max_overflow": pool_size}
    )
    engine = create_engine(url, connect_args={"check_same_thread": False,
                                              "timeout": wait_seconds,
                                              "factory": _SQLiteConnection},
                           **pool_options)
    # A "file:" URI is left to SQLite's busy handler, as before: no sidecar path to derive.
    writer_lock = (
        _WriterFileLock(Path(database).absolute())
        if writer_lock_file and _HAS_FLOCK and not in_memory
        and not database.startswith("file:") else None
    )
    _configure_sqlite(engine, wait_seconds=wait_seconds, writer_lock=writer_lock)
    return engine


def _configure_sqlite(engine: Engine, *, wait_seconds: float,
                      writer_lock: _WriterFileLock | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so we can make it IMMEDIATE (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={round(wait_seconds * 1000)}")
        cursor.close()
        dbapi_connection.transaction_ended = partial(_release_writers, record.info)

    turns = _WriteTurns(writer_lock)

    def _release_writers(info: dict[str, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            turns.release()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(AUTOCOMMIT_READ):
            return  # read_connection: each statement its own read, no lock taken
        _begin_writing(connection)

    def _begin_writing(connection: Any) -> None:
        if not connection.info.get(_HOLDS_WRITE_LOCK):
            if not turns.acquire(wait_seconds):
                raise _database_is_locked()
            connection.info[_HOLDS_WRITE_LOCK] = True
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY_SNAPSHOT when another writer commits in between.
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release_writers(connection.info)
            raise

    _WRITE_BEGINNERS[engine] = _begin_writing

    # A transaction the pool ends itself (a connection returned or discarded mid-transaction)
    # goes through rollback() or close() too; these fire before them, in case one did not.
    @event.listens_for(engine.pool, "reset")
    def _on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        _release_writers(connection_record.info)

    @event.listens_for(engine.pool, "close")
    def _on_close(dbapi_connection: Any, connection_record: Any) -> None:
        _release_writers(connection_record.info)

    @event.listens_for(engine.pool, "invalidate")
    def _on_invalidate(dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
        _release_writers(connection_record.info)


def begin_write(connection: Connection) -> None:
    """Make a connection that has been reading with `AUTOCOMMIT_READ` (SQLAlchemy's transaction
    begun, no BEGIN sent) write from now on: take the write turn and BEGIN IMMEDIATE, as a
    transaction begun without the option does; its COMMIT or ROLLBACK ends the turn.

    Cheaper than ending the read and beginning again (a session's commit and autobegin: about
    30 us of a booking's CPU), and a session using the connection keeps its transaction.
    """
    if not connection.in_transaction():
        raise RuntimeError("begin_write: begin the reading transaction first")
    connection.execution_options(**{AUTOCOMMIT_READ: False})
    begin_writing = _WRITE_BEGINNERS.get(connection.engine)
    if begin_writing is None:
        raise RuntimeError("begin_write: not an engine of build_sqlite_engine")
    begin_writing(connection)


#: Each engine's way of taking the write turn and beginning (`begin_write`).
_WRITE_BEGINNERS: WeakKeyDictionary[Engine, Callable[[Connection], None]] = WeakKeyDictionary()


class _SQLiteConnection(sqlite3.Connection):
    """Ends the write turn once SQLite has ended the transaction.

    SQLAlchemy's commit and rollback events fire before it calls commit() or rollback(): a
    writer let in there found the transaction still open and fell into SQLite's busy handler,
    which sleeps 1 ms, then 2, 5 ... before trying again.
    """

    transaction_ended: Callable[[], None] | None = None

    def commit(self) -> None:
        super().commit()  # if it fails, the transaction is still open until rolled back
        self._ended()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._ended()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._ended()

    def _ended(self) -> None:
        if self.transaction_ended is not None:
            self.transaction_ended()


def _database_is_locked() -> DBAPIError:
    """What SQLite's busy handler raises from BEGIN IMMEDIATE when its timeout runs out."""
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))


class _WriteTurns:
    """One writer at a time: first among this process's threads, then among processes.

    Writers of this process queue on a lock of their own before BEGIN IMMEDIATE. Left to
    SQLite's busy handler, waiters poll with sleeps growing to 100 ms and whoever happens to
    poll at the right moment wins: under 16 concurrent bookings the median waited 8 ms and
    the slowest over a second. Only one writer per process then waits for the other processes,
    on the writer lock file when the database is a file (else in SQLite's busy handler).
    """

    def __init__(self, file_lock: _WriterFileLock | None) -> None:
        self._threads = threading.Lock()
        self._file_lock = file_lock
        self._queued = 0
        self._queued_lock = threading.Lock()

    def acquire(self, wait_seconds: float) -> bool:
        deadline = time.monotonic() + wait_seconds
        with self._queued_lock:
            self._queued += 1
        try:
            if not self._threads.acquire(timeout=wait_seconds):
                return False
        finally:
            with self._queued_lock:
                self._queued -= 1
        try:
            if self._file_lock is None or self._file_lock.acquire(deadline):
                return True
        except BaseException:
            self._threads.release()
            raise
        self._threads.release()
        return False

    def release(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release(threads_waiting=self._queued > 0)
        self._threads.release()


class _WriterFileLock:
    """The writers of every process using one SQLite file take turns on `flock`ed files beside it.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries, so a writer arriving
    while another process wrote typically slept far longer than that transaction lasted. A
    blocking flock would wake in time but could not give up after the busy timeout; so:

    * `<database>.writer-lock`, locked exclusively without blocking, is the write turn;
    * a writer that finds it taken holds `<database>.writer-waiting` shared while it waits on
      `<database>.writer-wake`, a FIFO: a process ending its turn and finding the waiting file
      held writes a byte into it, which wakes the waiter at once (it then only waits to be
      scheduled); the waiter also tries every _RETRY_SECONDS (a killed holder writes nothing,
      the kernel drops its locks) until its deadline;
    * a process whose writers have had the turn for _TURN_SECONDS while others waited lets them
      go first: its next writer waits until the woken writer has the lock (or _YIELD_SECONDS).
      Within its turn a process's next writer takes the lock at once, and nobody is woken:
      handing the lock to another process costs that process's being scheduled (on the shared
      2-CPU machine at load 5, a woken writer began 0.2-15 ms after the commit, median 2.6 ms,
      against 34 ms in the busy handler), and without a limit that next writer, trying
      microseconds after the last commit, would nearly always win. Turns of 0, 2 and 10 ms
      gave bench_scheduling's SQLite bookings (2 workers) much the same p99, 63-102 ms in most
      rounds (against 112-740 ms without the lock files).

    Correctness never rests on these files (BEGIN IMMEDIATE does): a process not using them
    (another program, or a platform without fcntl) waits in SQLite's busy handler as before.
    """

    def __init__(self, database: Path) -> None:
        self._paths = tuple(database.with_name(f"{database.name}.writer-{role}")
                            for role in ("lock", "waiting", "wake"))
        self._owner_pid = 0
        self._turn = self._waiting = self._wake = -1
        self._turn_started = 0.0
        self._in_turn = False
        self._yield_until = 0.0
        self._unusable = False

    def _open(self) -> bool:
        """Open this process's descriptors; False (and a warning) if the files cannot be used."""
        # After a fork the child shares the parent's open files, and with them its locks:
        # it must lock files of its own (and never unlock the parent's).
        turn_path, waiting_path, wake_path = self._paths
        flags = os.O_RDWR | os.O_CLOEXEC
        opened: list[int] = []
        try:
            with suppress(FileExistsError):
                os.mkfifo(wake_path, 0o600)
            opened.append(os.open(turn_path, flags | os.O_CREAT, 0o600))
            opened.append(os.open(waiting_path, flags | os.O_CREAT, 0o600))
            # Read and write ends in one, never blocking: opening waits for no other end.
            opened.append(os.open(wake_path, flags | os.O_NONBLOCK))
            if not stat.S_ISFIFO(os.fstat(opened[-1]).st_mode):
                raise OSError(f"{wake_path} is not a FIFO")
        except OSError as error:
            _close_all(*opened)
            _logger.warning("SQLite writers of several processes wait in SQLite's busy handler:"
                            " the writer lock files cannot be used (%s)", error)
            self._unusable = True
            return False
        self._turn, self._waiting, self._wake = opened
        # poll, not select: a server's descriptor numbers pass select's limit of 1024.
        self._wake_poll = select.poll()
        self._wake_poll.register(self._wake, select.POLLIN)
        self._owner_pid = os.getpid()
        self._in_turn = False
        self._yield_until = 0.0
        finalize(self, _close_all, *opened)
        return True

    def acquire(self, deadline: float) -> bool:
        """Called with the process's writer lock held, so by one thread at a time."""
        if self._owner_pid != os.getpid() and (self._unusable or not self._open()):
            return True  # as before the lock files: waiting is left to SQLite's busy handler
        if self._yield_until:
            self._let_woken_writer_in(until=min(self._yield_until, deadline))
            self._yield_until = 0.0
        if _try_flock(self._turn):
            self._begin_turn()
            return True
        while not _try_flock(self._waiting, shared=True):  # held exclusively for a moment
            if time.monotonic() >= deadline:
                return False
            time.sleep(_YIELD_POLL_SECONDS)
        try:
            while not _try_flock(self._turn):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._wake_poll.poll(min(remaining, _RETRY_SECONDS) * 1000):
                    with suppress(BlockingIOError):
                        os.read(self._wake, 512)  # wake-ups meant for earlier waiters too
        finally:
            fcntl.flock(self._waiting, fcntl.LOCK_UN)
        self._in_turn = False
        self._begin_turn()
        return True

    def _let_woken_writer_in(self, until: float) -> None:
        """After this process's turn: until the writer it woke has taken the lock (nobody waits
        any more), or `until`, if that writer is slow to be scheduled or has given up."""
        while time.monotonic() < until:
            if _try_flock(self._waiting):
                fcntl.flock(self._waiting, fcntl.LOCK_UN)
                return
            time.sleep(_YIELD_POLL_SECONDS)

    def _begin_turn(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self._turn_started = time.monotonic()

    def release(self, *, threads_waiting: bool) -> None:
        """`threads_waiting`: another writer of this process is about to try."""
        if self._owner_pid != os.getpid():
            return
        fcntl.flock(self._turn, fcntl.LOCK_UN)
        if _try_flock(self._waiting):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)  # nobody waiting
            return
        now = time.monotonic()
        if threads_waiting and now - self._turn_started < _TURN_SECONDS:
            return  # the turn goes on: this process's next writer takes the lock at once
        with suppress(BlockingIOError):  # the FIFO full of unread wake-ups: woken anyway
            os.write(self._wake, b"w")
        self._in_turn = False
        if threads_waiting:
            self._yield_until = now + _YIELD_SECONDS


#: How often a waiting writer tries the turn when no wake-up comes (a killed holder).
_RETRY_SECONDS = 0.002
#: How long a process may keep the write turn while writers of other processes wait.
_TURN_SECONDS = 0.002
#: How long, after its turn, a process's next writer lets a woken writer of another take it.
_YIELD_SECONDS = 0.005
_YIELD_POLL_SECONDS = 0.0002


def _try_flock(descriptor: int, *, shared: bool = False) -> bool:
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _close_all(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


#: connection.info key: this connection holds its process's SQLite writer lock.
_HOLDS_WRITE_LOCK = "jaejin_holds_write_lock"
