"""Engine, sessions and the declarative base shared by every capability's tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

from sqlalchemy import JSON, Connection, DateTime, Engine, MetaData, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from jaejin.core.config import Settings, get_settings
from jaejin.core.sqlite_engine import AUTOCOMMIT_READ, SQLITE_WAIT_SECONDS, build_sqlite_engine

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
            yield connection.execution_options(**{AUTOCOMMIT_READ: True})
        else:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")


def build_engine(url: str, *, pool_size: int = 20, sqlite_wait_seconds: float = SQLITE_WAIT_SECONDS,
                 sqlite_writer_lock_file: bool = True) -> Engine:
    """An engine for `url`. On SQLite, a writer waits up to `sqlite_wait_seconds` for others
    (then "database is locked"); `sqlite_writer_lock_file=False` leaves the waiting for other
    processes to SQLite's busy handler (the baseline of benchmarks/bench_sqlite_writers.py)."""
    if url.startswith("sqlite"):
        return build_sqlite_engine(url, pool_size=pool_size, wait_seconds=sqlite_wait_seconds,
                                   writer_lock_file=sqlite_writer_lock_file)
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
