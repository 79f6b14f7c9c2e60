from __future__ import annotations

import pytest

from jaejin.policy import PackRegistry, default_registry

# The catalogues are compiled once per run by tests/conftest.py.


@pytest.fixture(scope="session")
def registry() -> PackRegistry:
    return default_registry()
