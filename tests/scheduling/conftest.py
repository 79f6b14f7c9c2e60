from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from jaejin.core.i18n import get_translator

LOCALES = Path(__file__).resolve().parents[2] / "jaejin" / "scheduling" / "locales"


def _compile_scheduling_catalogues() -> None:
    """Compile this capability's .po files, replacing each .mo atomically (xdist-safe)."""
    for po_path in sorted(LOCALES.glob("*/LC_MESSAGES/messages.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as po_file:
            catalogue = read_po(po_file)
        handle, temporary = tempfile.mkstemp(dir=po_path.parent, suffix=".mo.tmp")
        with os.fdopen(handle, "wb") as mo_file:
            write_mo(mo_file, catalogue)
        os.replace(temporary, mo_path)
    get_translator.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def scheduling_catalogues() -> None:
    _compile_scheduling_catalogues()
