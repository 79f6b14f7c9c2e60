"""Every message the scheduling code can show has a real Korean translation."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

PACKAGE = Path(__file__).resolve().parents[2] / "jaejin" / "scheduling"
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def extracted_messages() -> set[str]:
    found = extract_from_dir(
        str(PACKAGE),
        method_map=[("**.py", "python")],
        keywords={"N_": None, "translate": (2,)},
    )
    return {message for _file, _line, message, _comments, _context in found if message}


def catalogue(language: str):
    with (PACKAGE / "locales" / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle)


def test_every_message_in_the_code_is_in_both_catalogues() -> None:
    messages = extracted_messages()
    assert len(messages) > 30

    for language in ("ko", "en"):
        ids = {item.id for item in catalogue(language) if item.id}
        assert messages - ids == set(), language
        assert ids - messages == set(), f"stale entries in {language}"


def test_every_korean_translation_is_filled_keeps_its_placeholders_and_is_korean() -> None:
    for item in catalogue("ko"):
        if not item.id:
            continue
        assert item.string, item.id
        assert sorted(PLACEHOLDER.findall(item.string)) == sorted(PLACEHOLDER.findall(item.id))
        if PLACEHOLDER.sub("", item.id).strip(" =()-:"):
            assert re.search("[가-힣]", item.string), item.id
