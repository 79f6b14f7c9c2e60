"""SQLite writers take turns before BEGIN IMMEDIATE: the threads of one process on a lock of
their own, the processes on the writer lock files beside the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from jaejin.core.database import build_engine, read_connection
from jaejin.core.sqlite_engine import AUTOCOMMIT_READ, begin_write

#: Another process holding a write transaction: it prints "holding", waits for a line on its
#: input (the waiter is about to begin), then commits after `hold` seconds ("forever": never)
#: and prints the monotonic clock (shared by every process) right after its commit returned.
_HOLDER = """
import sys, time
from sqlalchemy import text
from jaejin.core.database import build_engine
url, hold = sys.argv[1], sys.argv[2]
connection = build_engine(url).connect()
transaction = connection.begin()
connection.execute(text("UPDATE counter SET value = value + 1000"))
print("holding", flush=True)
sys.stdin.readline()
time.sleep(3600 if hold == "forever" else float(hold))
transaction.commit()
print(time.monotonic(), flush=True)
"""

#: Another process adding 1 to the counter `times` times in each of `threads` threads.
_ADDER = """
import sys, threading
from sqlalchemy import text
from jaejin.core.database import build_engine
url, threads, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine = build_engine(url)
def add():
    for _ in range(times):
        with engine.begin() as connection:
            value = connection.execute(text("SELECT value FROM counter")).scalar_one()
            connection.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})
workers = [threading.Thread(target=add) for _ in range(threads)]
for worker in workers: worker.start()
for worker in workers: worker.join()
"""

_REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'writers.db'}"


@pytest.fixture
def sqlite_engine(database_url: str) -> Iterator[Engine]:
    engine = build_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield engine
    engine.dispose()


def _python(script: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *arguments], cwd=_REPOSITORY,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.fixture
def holder(database_url: str, sqlite_engine: Engine) -> Iterator[_Holder]:
    started: list[subprocess.Popen[str]] = []

    def start(hold: str) -> subprocess.Popen[str]:
        process = _python(_HOLDER, database_url, hold)
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


_Holder = Callable[[str], "subprocess.Popen[str]"]


def _value(engine: Engine) -> int:
    with read_connection(engine) as connection:
        return int(connection.execute(text("SELECT value FROM counter")).scalar_one())


def test_every_way_a_transaction_ends_lets_the_next_writer_in(sqlite_engine: Engine) -> None:
    # Each would leave the next BEGIN waiting for ever (15 s, then "database is locked") if
    # it kept the process's writer lock.
    with sqlite_engine.begin() as connection:
        connection.execute(text("UPDATE counter SET value = value + 1"))
    with sqlite_engine.connect() as connection:
        connection.execute(text("UPDATE counter SET value = value + 100"))
        connection.rollback()
    with sqlite_engine.connect() as connection:
        connection.execute(text("UPDATE counter SET value = value + 100"))
        # closed with its transaction open: the pool rolls it back
    connection = sqlite_engine.connect()
    connection.execute(text("UPDATE counter SET value = value + 100"))
    connection.invalidate()
    with pytest.raises(Exception, match="UNIQUE"), sqlite_engine.begin() as failing:
        failing.execute(text("INSERT INTO counter VALUES (1, 5)"))
    done = threading.Event()

    def write() -> None:
        with sqlite_engine.begin() as other:
            other.execute(text("UPDATE counter SET value = value + 1"))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=5)
    assert done.is_set()
    assert _value(sqlite_engine) == 2


def test_a_reader_never_waits_for_a_writer(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as writer:
        writer.execute(text("UPDATE counter SET value = 7"))
        # read_connection takes no write lock, neither SQLite's nor the process's.
        assert _value(sqlite_engine) == 0
    assert _value(sqlite_engine) == 7


def test_a_reading_connection_takes_the_write_turn_only_once_told_to_write(
        sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        connection.execution_options(**{AUTOCOMMIT_READ: True})
        with connection.begin() as transaction:
            assert connection.execute(text("SELECT value FROM counter")).scalar_one() == 0
            with sqlite_engine.begin() as other:  # no turn held by the reader
                other.execute(text("UPDATE counter SET value = 5"))
            begin_write(connection)
            connection.execute(text("UPDATE counter SET value = value + 1"))
            assert _value(sqlite_engine) == 5  # not committed yet
            transaction.commit()
    assert _value(sqlite_engine) == 6
    with sqlite_engine.begin() as next_writer:  # the turn was ended by the commit
        next_writer.execute(text("UPDATE counter SET value = value + 1"))
    assert _value(sqlite_engine) == 7


def test_a_write_begun_so_and_rolled_back_lets_the_next_writer_in(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        connection.execution_options(**{AUTOCOMMIT_READ: True})
        with connection.begin() as transaction:
            begin_write(connection)
            connection.execute(text("UPDATE counter SET value = 9"))
            transaction.rollback()
    with sqlite_engine.begin() as next_writer:
        next_writer.execute(text("UPDATE counter SET value = value + 1"))
    assert _value(sqlite_engine) == 1
    with sqlite_engine.connect() as idle, pytest.raises(RuntimeError, match="begin"):
        begin_write(idle)


def test_concurrent_writers_all_commit_once(sqlite_engine: Engine) -> None:
    def add(times: int) -> None:
        for _ in range(times):
            with sqlite_engine.begin() as connection:
                current = connection.execute(text("SELECT value FROM counter")).scalar_one()
                connection.execute(text("UPDATE counter SET value = :v"), {"v": current + 1})

    threads = [threading.Thread(target=add, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert _value(sqlite_engine) == 200


def _begin_in_thread(engine: Engine) -> tuple[threading.Thread, dict[str, float | Exception]]:
    """A writer in another thread: when it asked to begin, when it had begun (or its error)."""
    times: dict[str, float | Exception] = {}

    def write() -> None:
        times["asked"] = time.monotonic()
        try:
            with engine.begin() as connection:
                times["began"] = time.monotonic()
                connection.execute(text("UPDATE counter SET value = value + 1"))
        except Exception as error:
            times["error"] = error

    writer = threading.Thread(target=write)
    writer.start()
    return writer, times


def test_a_writer_of_another_process_begins_as_soon_as_the_holder_commits(
        sqlite_engine: Engine, holder: _Holder) -> None:
    process = holder("0.35")
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    writer, times = _begin_in_thread(sqlite_engine)
    committed = float(process.stdout.readline())
    writer.join(timeout=10)
    assert "error" not in times
    assert float(times["began"]) - float(times["asked"]) > 0.25  # it did wait for the holder
    # SQLite's busy handler, tried 328 and 428 ms after the first try, would start it ~80 ms
    # after this commit.
    assert float(times["began"]) - committed < 0.05
    assert _value(sqlite_engine) == 1001


def test_a_killed_holder_lets_the_waiting_writer_in(sqlite_engine: Engine,
                                                    holder: _Holder) -> None:
    process = holder("forever")
    writer, times = _begin_in_thread(sqlite_engine)
    time.sleep(0.3)
    assert "began" not in times
    os.kill(process.pid, signal.SIGKILL)
    killed = time.monotonic()
    writer.join(timeout=10)
    assert "error" not in times
    assert float(times["began"]) - killed < 0.5
    assert _value(sqlite_engine) == 1  # the killed holder's write never happened


def test_a_holder_that_never_lets_go_leaves_the_writer_database_is_locked(
        database_url: str, holder: _Holder) -> None:
    holder("forever")
    impatient = build_engine(database_url, sqlite_wait_seconds=0.5)
    asked = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"), impatient.begin():
        pass
    assert 0.45 < time.monotonic() - asked < 5
    # The writer lock is not left taken by the failed attempt: reading still works, and so does
    # writing once the holder is gone.
    with read_connection(impatient) as connection:
        assert connection.execute(text("SELECT value FROM counter")).scalar_one() == 0
    impatient.dispose()


def test_writers_of_two_processes_all_commit_once(database_url: str,
                                                  sqlite_engine: Engine) -> None:
    adders = [_python(_ADDER, database_url, "4", "50") for _ in range(2)]
    for adder in adders:
        assert adder.wait(timeout=120) == 0
    assert _value(sqlite_engine) == 400


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_needs_no_lock_file(url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = build_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    with pytest.raises(Exception, match="UNIQUE"), engine.begin() as failing:
        failing.execute(text("INSERT INTO counter VALUES (1, 5)"))
    with engine.begin() as connection:
        connection.execute(text("UPDATE counter SET value = value + 1"))
        assert connection.execute(text("SELECT value FROM counter")).scalar_one() == 1
    assert list(tmp_path.iterdir()) == []
    engine.dispose()


def test_a_writer_waits_even_when_the_process_has_over_1024_open_files(
        database_url: str, holder: _Holder) -> None:
    # A busy server's sockets push the lock files' descriptors past select()'s limit.
    spare = [os.dup(0) for _ in range(1100)]
    try:
        engine = build_engine(database_url)
        process = holder("0.2")
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        with engine.begin() as connection:
            connection.execute(text("UPDATE counter SET value = value + 1"))
        assert process.wait(timeout=10) == 0
        assert _value(engine) == 1001
        engine.dispose()
    finally:
        for descriptor in spare:
            os.close(descriptor)
