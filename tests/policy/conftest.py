from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

import jaejin.policy
from jaejin.core.i18n import get_translator
from jaejin.policy import PackRegistry, default_registry

POLICY_LOCALES = Path(jaejin.policy.__file__).resolve().parent / "locales"


@pytest.fixture(scope="session", autouse=True)
def compiled_policy_catalogues() -> None:
    # .mo files are build output (git-ignored); compile this capability's so Korean text is real.
    for po_path in POLICY_LOCALES.glob("*/LC_MESSAGES/messages.po"):
        with po_path.open("rb") as po_file:
            catalogue = read_po(po_file)
        with po_path.with_suffix(".mo").open("wb") as mo_file:
            write_mo(mo_file, catalogue)
    get_translator.cache_clear()


@pytest.fixture(scope="session")
def registry() -> PackRegistry:
    return default_registry()
