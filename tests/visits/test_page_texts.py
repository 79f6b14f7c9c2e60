"""Every word the visit pages show comes from the translated texts, and every text is Korean too."""

from __future__ import annotations

import re
import string

import pytest

from jaejin.core.i18n import translate

from .harness import PAGE_TEXTS, STATIC

VISIT_JS = (STATIC / "visit.js").read_text("utf-8")
DEVICE_CHECK_JS = (STATIC / "device-check.js").read_text("utf-8")
MEDIA_RESULTS = ("ok", "denied", "missing", "in_use", "error")
DEVICE_CHECK_SECTIONS = ("camera", "microphone", "speaker", "connection")


#: Literals that look like text keys but are not: a result kind composed into `camera_in_use`.
NOT_TEXT_KEYS = {"in_use"}


def literal_keys(source: str) -> set[str]:
    """Text keys the script names: `t('word')` calls and every snake_case string literal."""
    code = re.sub(r"//.*", "", source)
    called = set(re.findall(r"\bt\('([a-z_]+)'", code))
    snake = set(re.findall(r"'([a-z]+(?:_[a-z]+)+)'", code))
    return (called | snake) - NOT_TEXT_KEYS


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("page", sorted(PAGE_TEXTS))
def test_every_page_text_has_a_korean_translation_with_the_same_placeholders(page: str) -> None:
    for key, msgid in PAGE_TEXTS[page].items():
        korean = translate("ko", msgid)
        assert korean != msgid, f"{page}.{key} has no Korean translation"
        assert placeholders(korean) == placeholders(msgid), key


def test_the_visit_page_names_only_texts_that_exist_and_uses_them_all() -> None:
    named = literal_keys(VISIT_JS)
    texts = set(PAGE_TEXTS["visit"])
    assert named - texts == set()
    assert texts - named == set()


def test_the_device_check_names_only_texts_that_exist_and_uses_them_all() -> None:
    named = literal_keys(DEVICE_CHECK_JS)
    named |= {f"{section}_heading" for section in DEVICE_CHECK_SECTIONS}
    named |= {f"{device}_{result}" for device in ("camera", "microphone")
              for result in MEDIA_RESULTS}
    texts = set(PAGE_TEXTS["device_check"])
    assert named - texts == set()
    assert texts - named == set()


def test_the_scripts_show_no_hard_coded_sentences() -> None:
    for source in (VISIT_JS, DEVICE_CHECK_JS):
        code = re.sub(r"//.*", "", source)
        shown = re.findall(r"(?:textContent\s*=|text:)\s*'([^']*)'", code)
        assert [text for text in shown if re.search(r"[A-Za-z]{3}", text)] == []
