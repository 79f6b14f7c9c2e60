"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when JAEJIN_TEST_DATABASE_URL
points at a server), the application, and people to act as.

The Makefile runs the suite once per database; nothing here mocks the database or the app.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from jaejin.core.config import Settings
from jaejin.core.database import build_engine, session_factory
from jaejin.core.i18n import compile_catalogues
from jaejin.core.migrate import upgrade
from jaejin.models import metadata
from tests.support import Actors

POSTGRES_URL = os.environ.get("JAEJIN_TEST_DATABASE_URL", "")


def pytest_report_header() -> str:
    return f"jaejin database: {'postgresql' if POSTGRES_URL else 'sqlite'}"


@pytest.fixture(scope="session", autouse=True)
def _compiled_catalogues() -> None:
    compile_catalogues()


def _create_postgres_database(worker: str) -> tuple[str, str]:
    server = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    name = f"jaejin_test_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
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


def _empty_all_tables(engine: Engine) -> None:
    tables = [t for t in reversed(metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())


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
    """Two institutions with a person in every role, and a patient at each."""
    return Actors.create(db, settings)
