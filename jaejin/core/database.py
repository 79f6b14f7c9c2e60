"""Engine, sessions and the declarative base shared by every capability's tables."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

from sqlalchemy import JSON, Connection, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from jaejin.core.config import Settings, get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; refuses naive ones so no local time leaks in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: use an aware datetime (UTC inside)")
        utc = value.astimezone(UTC)
        # SQLite has no time zone type: keep the UTC wall time, restore tzinfo on the way out.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so we can make it IMMEDIATE (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    # Writers of this process queue on a lock of their own before BEGIN IMMEDIATE. Left to
    # SQLite's busy handler, waiters poll with sleeps growing to 100 ms and whoever happens to
    # poll at the right moment wins: under 16 concurrent bookings the median waited 8 ms and
    # the slowest over a second. Only one writer per process then contends with the other
    # processes' in the busy handler.
    writers = threading.Lock()

    def _release_writers(info: dict[str, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            writers.release()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_AUTOCOMMIT_READ):
            return  # read_connection: each statement its own read, no lock taken
        if not connection.info.get(_HOLDS_WRITE_LOCK):
            if not writers.acquire(timeout=_SQLITE_BUSY_SECONDS):
                raise sqlite3.OperationalError("database is locked")
            connection.info[_HOLDS_WRITE_LOCK] = True
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY_SNAPSHOT when another writer commits in between.
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release_writers(connection.info)
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection: Any) -> None:
        _release_writers(connection.info)

    # A transaction the pool ends itself (a connection returned or discarded mid-transaction)
    # fires no commit or rollback event.
    @event.listens_for(engine.pool, "reset")
    def _on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        _release_writers(connection_record.info)

    @event.listens_for(engine.pool, "close")
    def _on_close(dbapi_connection: Any, connection_record: Any) -> None:
        _release_writers(connection_record.info)

    @event.listens_for(engine.pool, "invalidate")
    def _on_invalidate(dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
        _release_writers(connection_record.info)


#: connection.info key: this connection holds its process's SQLite writer lock.
_HOLDS_WRITE_LOCK = "jaejin_holds_write_lock"
#: How long a writer waits for another (SQLite's busy timeout, set below, is the same).
_SQLITE_BUSY_SECONDS = 15


#: Execution option of `read_connection` on SQLite.
_AUTOCOMMIT_READ = "jaejin_autocommit_read"


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for a short read outside any transaction, returned on exit.

    Each statement sees the database as committed when it runs: use it for one-statement reads
    (looking up who is calling). On SQLite no BEGIN IMMEDIATE is issued, so the read neither
    takes nor waits for the write lock (WAL readers never block); on PostgreSQL autocommit
    spares the BEGIN and ROLLBACK round trips.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            yield connection.execution_options(**{_AUTOCOMMIT_READ: True})
        else:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")


def build_engine(url: str, *, pool_size: int = 20) -> Engine:
    if url.startswith("sqlite"):
        database_path = url.split("///", 1)[-1]
        if database_path and database_path != ":memory:":
            Path(database_path).parent.mkdir(parents=True, exist_ok=True)
        # A file database gets the same pool as PostgreSQL: with SQLAlchemy's default (5 kept,
        # 10 more closed on return) 16 concurrent clients kept reopening connections, each
        # open paying for its PRAGMAs.
        pool_options: dict[str, Any] = (
            {"pool_size": pool_size, "max_overflow": pool_size}
            if database_path and database_path != ":memory:" else {}
        )
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               **pool_options)
        _configure_sqlite(engine)
        return engine
    # pool_size: FastAPI's thread pool runs up to 40 requests at once, each holding a connection
    # for its session and briefly one more to look up the caller; connections beyond the pool
    # are closed on return, and opening a PostgreSQL connection costs more than a request.
    # No pre-ping (a SELECT 1 round trip on every checkout): a connection the server dropped
    # fails its statement once, and SQLAlchemy then replaces the whole pool.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size)


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    return build_engine(url)


def get_engine(settings: Settings | None = None) -> Engine:
    return _engine_for((settings or get_settings()).database_url)


_SESSION_FACTORIES: WeakKeyDictionary[Engine, sessionmaker[Session]] = WeakKeyDictionary()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """The engine's session maker, made once: each sessionmaker defines a new Session subclass,
    whose event set-up cost about as much as a whole request when done per request."""
    factory = _SESSION_FACTORIES.get(engine)
    if factory is None:
        factory = _SESSION_FACTORIES[engine] = sessionmaker(bind=engine, expire_on_commit=False)
    return factory


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    session = session_factory(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
