"""Translations: one gettext catalogue per capability, merged into one translator per language.

Each capability owns `jaejin/<capability>/locales/<locale>/LC_MESSAGES/messages.po`, so teams
working on different capabilities never edit the same catalogue. Catalogues are compiled to `.mo`
at install (`make install` runs `compile_catalogs`); a missing `.mo` simply falls back to the
message id, which is the English text.
"""

from __future__ import annotations

import gettext as _gettext
import os
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "messages"

#: Languages Jaejin speaks, as BCP 47 tags. Order is the order shown in the language switch.
SUPPORTED_LANGUAGES: tuple[str, ...] = (
    "ko", "en", "ja", "zh-Hans", "zh-Hant", "th", "vi", "mn", "ru", "ar",
)
LANGUAGE_NAMES: dict[str, str] = {
    "ko": "한국어", "en": "English", "ja": "日本語", "zh-Hans": "简体中文", "zh-Hant": "繁體中文",
    "th": "ไทย", "vi": "Tiếng Việt", "mn": "Монгол", "ru": "Русский", "ar": "العربية",
}
RIGHT_TO_LEFT = frozenset({"ar"})
DEFAULT_LANGUAGE = "ko"

_ALIASES = {
    "zh": "zh-Hans", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-hans": "zh-Hans",
    "zh-tw": "zh-Hant", "zh-hk": "zh-Hant", "zh-mo": "zh-Hant", "zh-hant": "zh-Hant",
}


def N_(message: str) -> str:
    """Mark a string for extraction without translating it now (for module-level constants)."""
    return message


#: Chinese languages other than Mandarin (ISO 639-3): written, their readers read Chinese text
#: in one of its two scripts, which the tag's script or region names (Cantonese: Traditional).
_OTHER_CHINESE = frozenset({"yue", "cmn", "nan", "hak", "wuu", "gan", "hsn", "cdo", "cjy",
                            "cpx", "czh", "czo", "lzh", "mnp"})
_TRADITIONAL_REGIONS = frozenset({"hk", "mo", "tw"})
#: The longest language tag stored (BCP 47 recommends supporting at least 35 characters).
LANGUAGE_TAG_LENGTH = 35


def _chinese_script(subtags: list[str]) -> str:
    if "hant" in subtags[1:]:
        return "zh-Hant"
    if "hans" in subtags[1:]:
        return "zh-Hans"
    if set(subtags[1:]) & _TRADITIONAL_REGIONS or subtags[0] == "yue":
        return "zh-Hant"
    return "zh-Hans"


@lru_cache(maxsize=512)
def normalise_language(tag: str | None) -> str | None:
    """Map a BCP 47 tag (`en-US`, `zh-TW`, `yue-Hant-HK`, `ko`) to a supported language, or
    None."""
    if not tag:
        return None
    lowered = tag.strip().replace("_", "-").lower()
    if lowered.split("-", 1)[0] in _OTHER_CHINESE:
        return _chinese_script(lowered.split("-"))
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    # The script decides Chinese, whatever region follows it (zh-Hant-TW, zh-Hans-SG).
    for script_prefix in ("zh-hant", "zh-hans"):
        if lowered.startswith(script_prefix + "-"):
            return _ALIASES[script_prefix]
    for supported in SUPPORTED_LANGUAGES:
        if lowered == supported.lower():
            return supported
    primary = lowered.split("-", 1)[0]
    if primary in _ALIASES:
        return _ALIASES[primary]
    return primary if primary in SUPPORTED_LANGUAGES else None


def negotiate_language(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """Pick the best supported language from an Accept-Language header."""
    if not accept_language:
        return default
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        pieces = part.strip().split(";")
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also false for NaN
                    quality = 0.0
        if quality > 0.0:  # q=0 means "not acceptable" (RFC 9110 §12.4.2)
            weighted.append((-quality, position, pieces[0]))
    for _quality, _position, tag in sorted(weighted):
        language = normalise_language(tag)
        if language:
            return language
    return default


def locale_directory_name(language: str) -> str:
    """gettext directory name for a language tag: `zh-Hans` -> `zh_Hans`."""
    return language.replace("-", "_")


def catalogue_roots() -> list[Path]:
    """Every capability's `locales` directory."""
    return sorted(path for path in PACKAGE_ROOT.glob("*/locales") if path.is_dir())


def get_translator(language: str) -> _gettext.NullTranslations:
    """One translator for `language` (any BCP 47 tag: `yue-Hant-HK` reads Traditional Chinese;
    a language without a catalogue reads English)."""
    return _translator(normalise_language(language) or "en")


@lru_cache(maxsize=len(SUPPORTED_LANGUAGES) + 1)
def _translator(language: str) -> _gettext.NullTranslations:
    """One translator for a supported language, chaining every capability's catalogue."""
    chain: _gettext.NullTranslations = _gettext.NullTranslations()
    head: _gettext.NullTranslations | None = None
    for root in catalogue_roots():
        try:
            found = _gettext.translation(
                DOMAIN, localedir=str(root), languages=[locale_directory_name(language)]
            )
        except OSError:
            continue
        if head is None:
            head = found
        else:
            head.add_fallback(found)
    if head is None:
        return chain
    return head


def translate(language: str, message: str, /, **params: object) -> str:
    """Translate `message` into `language`, then fill `{named}` parameters."""
    text = get_translator(language).gettext(message)
    return text.format(**params) if params else text


def translate_plural(
    language: str, singular: str, plural: str, count: int, /, **params: object
) -> str:
    text = get_translator(language).ngettext(singular, plural, count)
    return text.format(count=count, **params)


def compile_catalogues() -> list[Path]:
    """Compile every `.po` under the package to `.mo`; returns the files written."""
    written: list[Path] = []
    for po_path in sorted(PACKAGE_ROOT.glob("*/locales/*/LC_MESSAGES/*.po")):
        with po_path.open("rb") as po_file:
            catalogue = read_po(po_file)
        mo_path = po_path.with_suffix(".mo")
        # Write beside, then rename: a running server never reads a half-written catalogue.
        partial = mo_path.with_suffix(f".mo.{os.getpid()}.tmp")
        with partial.open("wb") as mo_file:
            write_mo(mo_file, catalogue)
        os.replace(partial, mo_path)
        written.append(mo_path)
    _translator.cache_clear()
    return written


if __name__ == "__main__":
    for path in compile_catalogues():
        print(path.relative_to(PACKAGE_ROOT.parent))
