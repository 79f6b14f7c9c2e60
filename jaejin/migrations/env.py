"""Alembic environment: the same migrations run on SQLite (batch mode) and PostgreSQL."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from jaejin.core.config import get_settings
from jaejin.core.database import build_engine
from jaejin.models import metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    if type_ == "type" and type(obj).__name__ == "UTCDateTime":
        return "jaejin.core.database.UTCDateTime()"
    return False


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = build_engine(url)
        with engine.connect() as fresh:
            _run(fresh)
        engine.dispose()
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
