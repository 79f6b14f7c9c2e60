"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when JAEJIN_TEST_DATABASE_URL
points at a server), the application, and people to act as.

The Makefile runs the suite once per database; nothing here mocks the database or the app.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import jaejin.models  # noqa: F401  (every capability's models mapped before any test runs)
from jaejin.core.config import Settings
from jaejin.core.database import build_engine, session_factory
from jaejin.core.i18n import compile_catalogues
from jaejin.core.migrate import upgrade
from jaejin.scheduling.place_watch import forget_places
from tests.core.helpers import fast_password_hashing
from tests.support import Actors

POSTGRES_URL = os.environ.get("JAEJIN_TEST_DATABASE_URL", "")


#: The xdist group every browser test joins: with `--dist loadgroup` one worker runs them all,
#: one after another, sharing one Chromium and one live server, instead of two workers each
#: running browsers (and video calls) beside the other's.
BROWSER_GROUP = "browser"


def pytest_report_header() -> str:
    return f"jaejin database: {'postgresql' if POSTGRES_URL else 'sqlite'}"


def pytest_configure(config: pytest.Config) -> None:
    # The .mo files are build output (git-ignored). Compiled once per run, by the process that
    # runs or distributes the tests, before any xdist worker starts: workers only read them.
    # (compile_catalogues replaces each file atomically, so a run beside another is safe too.)
    if not hasattr(config, "workerinput"):
        compile_catalogues()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every `browser` test in the browser group (before xdist reads the groups), so a new
    browser module cannot forget it."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(BROWSER_GROUP))


def _xdist_groups(item: pytest.Item) -> set[str]:
    return {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")}


_LOST_GROUPING = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Notice when `--dist loadgroup` is asked for but xdist's grouping is not in effect.

    xdist tells the scheduler an item's group by appending `@group` to its node id; pytest 9.2
    no longer lets a plugin rename a node (pytest-xdist issue #1386), so the groups were
    silently ignored and browser tests ran beside each other. pyproject.toml pins pytest below
    9.2 for that reason; with any other such combination every grouped test fails, saying why.
    """
    if not getattr(session.config.option, "loadgroup", False):  # set in xdist workers only
        return
    ignored = [item for item in session.items
               if (groups := _xdist_groups(item))
               and not item.nodeid.endswith("@" + "_".join(sorted(groups)))]
    for item in ignored:
        item.stash[_LOST_GROUPING] = (
            f"--dist loadgroup is not grouping with pytest {pytest.__version__}: this test "
            "lost its xdist_group and may run beside the rest of its group. Install the "
            "versions pyproject.toml asks for (make install).")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _LOST_GROUPING in item.stash:
        pytest.fail(item.stash[_LOST_GROUPING], pytrace=False)


def _create_postgres_database(worker: str) -> tuple[str, str]:
    server = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"jaejin_test_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        # A test database never has to survive a crash of the server: commits need not wait
        # for the WAL to reach the disk. What other sessions see, and when, is unchanged.
        connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit TO off'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(name: str) -> None:
    server = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", database="postgres")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[str]:
    if POSTGRES_URL:
        url, name = _create_postgres_database(worker_id)
        upgrade(url)
        yield url
        _drop_postgres_database(name)
    else:
        path: Path = tmp_path_factory.mktemp("db") / "jaejin-test.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        environment="test", database_url=database_url,
        secret_key="test-secret-key-that-is-long-enough-for-hs256-0123456789",
        public_base_url="http://testserver", redis_url=None, login_failures_before_lockout=5,
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = build_engine(settings.database_url)
    yield engine
    engine.dispose()


@dataclass(frozen=True)
class _Schema:
    """The test database's tables, children first, and its sequences (PostgreSQL)."""

    tables: tuple[Table, ...]
    sequences: tuple[str, ...]


_schemas: dict[str, _Schema] = {}


def _schema(engine: Engine) -> _Schema:
    """Read from the database itself once per run (the migrations ran before any test), so
    every capability's tables are covered, whether or not its models are imported."""
    key = engine.url.render_as_string(hide_password=False)
    if key not in _schemas:
        reflected = MetaData()
        reflected.reflect(bind=engine)
        tables = tuple(table for table in reversed(reflected.sorted_tables)
                       if table.name != "alembic_version")
        sequences: tuple[str, ...] = ()
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                sequences = tuple(connection.execute(text(
                    "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
                    "WHERE schemaname = current_schema()")).scalars())
        _schemas[key] = _Schema(tables, sequences)
    return _schemas[key]


def _empty_all_tables(engine: Engine) -> None:
    """Every row deleted, children first, and every id sequence restarted: what
    `TRUNCATE ... RESTART IDENTITY` does, but in milliseconds where PostgreSQL's TRUNCATE of
    every table takes about half a second (measured: 0.4-0.7 s against 11-30 ms), per test."""
    schema = _schema(engine)
    # A live server of the test before may still finish a request (a browser's last call
    # after the page closed) and commit a row that references one already deleted here; the
    # foreign key then refuses the parent's DELETE. Emptying again after it settles is enough.
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                for table in schema.tables:
                    connection.execute(table.delete())
                if schema.sequences:
                    restarts = ", ".join(f"setval('{name}', 1, false)"
                                         for name in schema.sequences)
                    connection.execute(text(f"SELECT {restarts}"))
            return
        except IntegrityError:
            if attempt == 4:
                raise
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def _places_stop_being_read_again() -> Iterator[None]:
    """A search starts a thread that reads the searched places again on the shared engine for
    a second (`jaejin.scheduling.place_watch`); it is ended with the test that started it, so
    that the next test's statement counts (audit, ingest, policy) see none of its reads."""
    yield
    forget_places()


@pytest.fixture
def clean_database(engine: Engine) -> Iterator[Engine]:
    _empty_all_tables(engine)
    yield engine


@pytest.fixture
def db(clean_database: Engine) -> Iterator[Session]:
    session = session_factory(clean_database)()
    yield session
    session.close()


@pytest.fixture(scope="session")
def app(settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    from jaejin.app import create_app

    application = create_app(settings)
    application.state.engine.dispose()
    application.state.engine = engine
    return application


@pytest.fixture
def client(app, clean_database: Engine):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
def actors(db: Session, settings: Settings) -> Actors:
    """Two institutions with a person in every role, and a patient at each.

    Their passwords are hashed with cheap argon2id parameters (tests/core/helpers.py; the
    production parameters are proved in tests/core/test_accounts.py): sixteen
    production-strength hashes cost seconds per test. Signing in still verifies them for real.
    """
    with fast_password_hashing():
        return Actors.create(db, settings)
