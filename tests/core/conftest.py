"""Platform-core tests hash passwords with cheap argon2id parameters: see helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.core.helpers import fast_password_hashing


@pytest.fixture(scope="module", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield
