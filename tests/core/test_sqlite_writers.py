"""SQLite writers of one process take turns on a lock of their own before BEGIN IMMEDIATE."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from jaejin.core.database import build_engine, read_connection


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = build_engine(f"sqlite:///{tmp_path / 'writers.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    return engine


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
