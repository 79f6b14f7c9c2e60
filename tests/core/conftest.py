"""Platform-core tests hash passwords with cheap argon2id parameters and empty the database
with DELETE rather than TRUNCATE (see helpers.py): the same checks, a fraction of the time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.core.helpers import empty_database, fast_password_hashing


@pytest.fixture(scope="module", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield


@pytest.fixture
def clean_database(engine: Engine) -> Iterator[Engine]:
    empty_database(engine)
    yield engine
