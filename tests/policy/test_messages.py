"""Every message exists in Korean and fills its placeholders."""

from __future__ import annotations

import string
from pathlib import Path

from babel.messages.pofile import read_po

import jaejin.policy
from jaejin.policy import default_registry, emergency, evaluate, messages, parse_request
from tests.policy.builders import EXAMPLE, build, drug

LOCALES = Path(jaejin.policy.__file__).resolve().parent / "locales"


def _msgids() -> set[str]:
    """Module-level message constants and label tables of the policy capability."""
    found: set[str] = set()
    for module in (messages, emergency):
        for name, value in vars(module).items():
            if not name.isupper() or name.startswith("_"):
                continue
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, dict) and name.endswith("_LABELS"):
                found.update(value.values())
    return found


def _catalogue(language: str) -> dict[str, object]:
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalogue = read_po(po_file)
    return {
        (message.id if isinstance(message.id, str) else message.id[0]): message.string
        for message in catalogue if message.id
    }


def _fields(text: str) -> set[str]:
    return {name for _literal, name, _spec, _conv in string.Formatter().parse(text) if name}


def test_every_message_has_a_korean_translation_with_the_same_placeholders() -> None:
    korean = _catalogue("ko")
    msgids = _msgids()
    assert len(msgids) > 80
    for msgid in msgids:
        assert msgid in korean, msgid
        translation = korean[msgid]
        text = translation if isinstance(translation, str) else translation[0]
        assert text, msgid
        assert _fields(text) == _fields(msgid), msgid


def test_the_english_catalogue_lists_the_same_messages() -> None:
    assert set(_catalogue("en")) == set(_catalogue("ko"))


def test_a_decision_in_korean_is_written_in_korean() -> None:
    data = build({"lang": "ko", "history": [], "patient.residence_region": "KR-41",
                  "prescriptions": [drug("morphine")], "consent_recorded": False})
    decision = evaluate(parse_request(data), default_registry())
    texts = [item.message for item in
             [*decision.reasons, *decision.conditions, *decision.prescriptions,
              *decision.alternatives]]
    assert texts
    for text in texts:
        assert any("\uac00" <= char <= "\ud7a3" for char in text), text


def test_a_decision_in_english_has_no_korean_except_names() -> None:
    decision = evaluate(parse_request(EXAMPLE), default_registry())
    assert decision.lang == "en"
    assert decision.reasons[0].message.startswith("Follow-up: seen in person here on 2026-12-01")
