"""Schema migrations, run programmatically (`jaejin db upgrade`, `make demo`, the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(database_url), revision)


def make_revision(database_url: str, message: str, revision_id: str) -> None:
    """Developer helper: autogenerate the next migration against an up-to-date database."""
    command.revision(alembic_config(database_url), message=message, autogenerate=True,
                     rev_id=revision_id)
