"""Helpers for the platform-core tests: cheap argon2id, a second app with other settings,
counting rows, reading the audit trail.

Nothing here replaces a real part: the password hasher is the same argon2id, only with test
cost parameters (as Django does in its own test settings), and the alternate app is the real
application built from different settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, Table, func, select
from sqlalchemy.orm import Session

from jaejin.core import events, security
from jaejin.core.audit import AuditEntry
from jaejin.core.config import Settings
from jaejin.core.database import session_factory

HANGUL = re.compile("[\uac00-\ud7a3]")
#: The core's Korean catalogue; once it exists, problem details must really be Korean.
KOREAN_CORE_CATALOGUE = Path(__file__).resolve().parents[2] / "jaejin/core/locales/ko"

#: argon2id at the lowest cost that is still argon2id: a hash takes ~1 ms instead of ~200 ms.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
#: What production uses, captured before any test swaps it.
PRODUCTION_HASHER: PasswordHasher = security._password_hasher


@contextmanager
def fast_password_hashing() -> Iterator[None]:
    """Use cheap argon2id parameters while the block runs (production parameters are tested
    separately in test_accounts)."""
    saved = security._password_hasher, security._DUMMY_HASH
    security._password_hasher = TEST_HASHER
    security._DUMMY_HASH = TEST_HASHER.hash("jaejin-no-such-account")
    try:
        yield
    finally:
        security._password_hasher, security._DUMMY_HASH = saved


@lru_cache(maxsize=4)
def _tables_in_delete_order(url: str, engine: Engine) -> tuple[Table, ...]:
    reflected = MetaData()
    reflected.reflect(bind=engine)
    return tuple(table for table in reversed(reflected.sorted_tables)
                 if table.name != "alembic_version")


def empty_database(engine: Engine) -> None:
    """Delete every row of every table, children first.

    DELETE on a test database's few rows takes milliseconds where PostgreSQL's TRUNCATE takes
    half a second; the tables are reflected from the database so capabilities' tables are
    emptied too.
    """
    tables = _tables_in_delete_order(engine.url.render_as_string(hide_password=False), engine)
    with engine.begin() as connection:
        for table in tables:
            connection.execute(table.delete())


@contextmanager
def alternate_app(app: FastAPI, engine: Engine, **overrides: Any) -> Iterator[FastAPI]:
    """The real application built from the test settings with `overrides`, on the same database.

    Building an app attaches its event bus globally; the original app's bus is put back after.
    """
    from jaejin.app import create_app

    settings: Settings = app.state.settings.model_copy(update=overrides)
    other = create_app(settings)
    other.state.engine.dispose()
    other.state.engine = engine
    try:
        yield other
    finally:
        events.attach_bus(app.state.bus)


@contextmanager
def client_for(app: FastAPI, base_url: str = "http://testserver") -> Iterator[TestClient]:
    with TestClient(app, base_url=base_url) as test_client:
        yield test_client


def count_rows(engine: Engine, *models: type[Any]) -> dict[str, int]:
    """Row counts of each table, from a fresh session (what another request would see)."""
    with session_factory(engine)() as session:
        return {
            model.__tablename__: session.execute(select(func.count()).select_from(model))
            .scalar_one()
            for model in models
        }


def audit_entries(engine: Engine, **filters: Any) -> list[AuditEntry]:
    with session_factory(engine)() as session:
        # Entries in the order they were written, across every chain.
        query = select(AuditEntry).order_by(AuditEntry.id)
        for name, value in filters.items():
            query = query.where(getattr(AuditEntry, name) == value)
        return list(session.execute(query).scalars())


def fresh(engine: Engine) -> Session:
    """A new session, so a test reads what is committed rather than its own identity map."""
    return session_factory(engine)()


def set_cookie_headers(response: Any, name: str) -> list[str]:
    return [value for key, value in response.headers.multi_items()
            if key.lower() == "set-cookie" and value.startswith(f"{name}=")]


def html_lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match, "page has no <html lang>"
    return match.group(1)
