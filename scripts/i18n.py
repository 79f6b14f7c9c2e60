"""Extract, update and check Jaejin's gettext catalogues: one catalogue per capability.

    .venv/bin/python scripts/i18n.py extract [capability ...]   # write locales/messages.pot
    .venv/bin/python scripts/i18n.py update  [capability ...]   # merge the POT into ko and en
    .venv/bin/python scripts/i18n.py check   [capability ...]   # fail on any msgid without Korean
    .venv/bin/python scripts/i18n.py check --language ja        # ... or without Japanese

Every directory under `jaejin/` is a capability with its own `locales/`. Modules directly under
`jaejin/` (app.py, cli.py, ...) belong to the `core` catalogue. Extraction uses the mapping in
`babel.cfg` (Python files, and Jinja templates through `jinja2.ext.babel_extract`).

`update` treats two kinds of catalogue differently, because several teams keep theirs by hand:

- the platform catalogues this script maintains (core, accounts, directory, web) are merged the
  usual gettext way: translations kept, new msgids added, vanished msgids marked obsolete (`#~`);
- every other catalogue is only ever appended to: msgids that are missing get an empty entry at
  the end of the file, and no existing byte of the file changes. Msgids the extractor no longer
  sees (for example ones chosen at run time) stay as they are.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGE = REPOSITORY / "jaejin"
MAPPING_FILE = REPOSITORY / "babel.cfg"
DOMAIN = "messages"

#: Translation functions and the (1-based) positions of their message arguments.
KEYWORDS: dict[str, tuple[int, ...] | None] = {
    "_": None,
    "N_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "t": None,
    "translate": (2,),
    "translate_plural": (2, 3),
}
#: Languages whose catalogues `update` keeps in step with the source.
CATALOGUE_LANGUAGES: tuple[str, ...] = ("ko", "en")
#: Catalogues merged (and pruned to obsolete) by this script; all others are append-only.
PIPELINE_CATALOGUES = frozenset({"core", "accounts", "directory", "web"})
#: Capability whose catalogue also holds the messages of modules directly under `jaejin/`.
TOP_LEVEL_OWNER = "core"
#: Method names in babel.cfg that are resolved to an importable extractor.
METHOD_ALIASES = {"jinja2": "jinja2.ext:babel_extract"}
#: Header lines that change on every run; ignored when deciding whether a file changed.
VOLATILE_HEADER = re.compile(r'^"(POT-Creation-Date|PO-Revision-Date): .*\\n"$', re.MULTILINE)
#: `{name}` (str.format, used by `translate`) and `%(name)s` (the Jinja i18n functions).
PLACEHOLDER = re.compile(
    r"(?<!\{)(\{[A-Za-z_][A-Za-z0-9_]*)(?:[!:][^{}]*)?\}(?!\})|(%\([A-Za-z_][A-Za-z0-9_]*\))")
LINE_WIDTH = 100


@dataclass(frozen=True, slots=True)
class Finding:
    capability: str
    language: str
    msgid: str
    problem: str

    def __str__(self) -> str:
        return f"{self.capability} [{self.language}] {self.problem}: {self.msgid!r}"


def capabilities() -> list[str]:
    """Every capability package under `jaejin/` (a directory with `__init__.py`)."""
    return sorted(
        path.name for path in PACKAGE.iterdir()
        if path.is_dir() and (path / "__init__.py").is_file() and path.name != "migrations"
    )


def locales_directory(capability: str) -> Path:
    return PACKAGE / capability / "locales"


def template_path(capability: str) -> Path:
    return locales_directory(capability) / f"{DOMAIN}.pot"


def catalogue_path(capability: str, language: str) -> Path:
    return locales_directory(capability) / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def _mapping() -> tuple[list[tuple[str, str]], dict[str, dict[str, str]]]:
    with MAPPING_FILE.open(encoding="utf-8") as mapping_file:
        method_map, options_map = parse_mapping_cfg(  # type: ignore[no-untyped-call]
            mapping_file, str(MAPPING_FILE))
    resolved = [(pattern, METHOD_ALIASES.get(method, method)) for pattern, method in method_map]
    return resolved, dict(options_map)


def _extract(directory: Path, descend: bool) -> Iterator[tuple[str, int, str | tuple[str, ...],
                                                               list[str], str | None]]:
    method_map, options_map = _mapping()
    results = extract_from_dir(
        str(directory), method_map, options_map, keywords=KEYWORDS,
        comment_tags=("Translators:",), strip_comment_tags=True,
        directory_filter=None if descend else (lambda _path: False),
    )
    for filename, lineno, message, comments, context in results:
        location = (directory / filename).relative_to(REPOSITORY).as_posix()
        yield location, lineno, message, comments, context


def build_template(capability: str) -> Catalog:
    """The capability's messages, freshly extracted from its source."""
    template = Catalog(project=f"Jaejin {capability}", version="0.1.0",
                       copyright_holder="Jaejin contributors", charset="utf-8", fuzzy=False)
    template.msgid_bugs_address = ""  # Babel's constructor would put a placeholder address
    sources: list[tuple[Path, bool]] = [(PACKAGE / capability, True)]
    if capability == TOP_LEVEL_OWNER:
        sources.append((PACKAGE, False))
    for directory, descend in sources:
        for location, lineno, message, comments, context in _extract(directory, descend):
            template.add(message, None, [(location, lineno)], auto_comments=comments,
                         context=context)
    return template


def _serialise(catalogue: Catalog, **options: bool) -> str:
    buffer = io.BytesIO()
    write_po(buffer, catalogue, width=LINE_WIDTH, include_lineno=False, sort_output=True,
             **options)
    return buffer.getvalue().decode("utf-8")


def _write_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file already says the same apart from its timestamps."""
    if path.is_file():
        current = path.read_text(encoding="utf-8")
        if VOLATILE_HEADER.sub("", current) == VOLATILE_HEADER.sub("", text):
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def _read(path: Path, language: str | None = None) -> Catalog:
    with path.open("rb") as po_file:
        return read_po(po_file, locale=language)


def extract(capability: str) -> Path | None:
    """Write the capability's `messages.pot`; None when it has no message at all."""
    template = build_template(capability)
    if not len(template):
        return None
    path = template_path(capability)
    _write_if_changed(path, _serialise(template))
    return path


def _template_for_update(capability: str) -> Catalog:
    path = template_path(capability)
    return _read(path) if path.is_file() else build_template(capability)


def _new_catalogue(template: Catalog, capability: str, language: str) -> Catalog:
    catalogue = Catalog(locale=language, project=f"Jaejin {capability}", version="0.1.0",
                        copyright_holder="Jaejin contributors",
                        revision_date=datetime.now(UTC), charset="utf-8",
                        header_comment=(f"# {language} translations for Jaejin {capability}.\n"
                                        "# Copyright (C) Jaejin contributors\n"
                                        "# Distributed under the same license as Jaejin.\n#"),
                        fuzzy=False)
    catalogue.msgid_bugs_address = ""
    catalogue.last_translator = "Jaejin contributors"
    catalogue.language_team = language
    catalogue.update(template, no_fuzzy_matching=True)
    return catalogue


def _merge(capability: str, language: str, template: Catalog) -> str:
    """Pipeline catalogue: the usual msgmerge, keeping translations, obsoleting the rest."""
    path = catalogue_path(capability, language)
    if not path.is_file():
        catalogue = _new_catalogue(template, capability, language)
    else:
        catalogue = _read(path, language)
        catalogue.update(template, update_header_comment=False, update_creation_date=False)
    changed = _write_if_changed(path, _serialise(catalogue))
    return "updated" if changed else "unchanged"


def _append_missing(capability: str, language: str, template: Catalog) -> str:
    """Hand-kept catalogue: append empty entries for missing msgids, touch nothing else."""
    path = catalogue_path(capability, language)
    if not path.is_file():
        _write_if_changed(path, _serialise(_new_catalogue(template, capability, language)))
        return "created"
    existing = _read(path, language)
    additions = Catalog(locale=existing.locale or language, charset="utf-8",
                        fuzzy=False)
    revived: list[str] = []
    for message in template:
        if not message.id:
            continue
        key = _ids(message)[0]
        if existing.get(key, message.context) is not None:
            continue
        if (key, message.context) in existing.obsolete or key in existing.obsolete:
            revived.append(key)
            continue
        additions.add(message.id, None, list(message.locations), flags=message.flags,
                      auto_comments=message.auto_comments, context=message.context)
    for key in revived:
        print(f"  {capability} [{language}]: {key!r} is marked obsolete here; "
              "revive it by hand", file=sys.stderr)
    if not len(additions):
        return "unchanged"
    text = _serialise(additions, omit_header=True)
    current = path.read_text(encoding="utf-8")
    separator = "" if current.endswith("\n\n") else ("\n" if current.endswith("\n") else "\n\n")
    with path.open("a", encoding="utf-8") as po_file:
        po_file.write(separator + text)
    return f"appended {len(additions)}"


def update(capability: str, languages: Sequence[str] = CATALOGUE_LANGUAGES,
           create: bool = False) -> dict[str, str]:
    """Bring the capability's catalogues in step with its POT; returns what happened per file.

    A capability without a `locales/` folder gets catalogues only when `create` is set (naming
    it on the command line does that), so a run over everything never plants files in other
    teams' folders.
    """
    if not locales_directory(capability).is_dir() and not create:
        return {}
    template = _template_for_update(capability)
    if not len(template):
        return {}
    outcome: dict[str, str] = {}
    for language in languages:
        if capability in PIPELINE_CATALOGUES:
            outcome[language] = _merge(capability, language, template)
        else:
            outcome[language] = _append_missing(capability, language, template)
    return outcome


def placeholders(text: str) -> set[str]:
    """The named parameters a message expects, as written: `{name` or `%(name)`."""
    return {f"{brace}}}" if brace else percent for brace, percent in PLACEHOLDER.findall(text)}


def _ids(message: Message) -> tuple[str, ...]:
    return tuple(message.id) if isinstance(message.id, (list, tuple)) else (message.id,)


def _strings(message: Message) -> tuple[str, ...]:
    if isinstance(message.string, (list, tuple)):
        return tuple(part or "" for part in message.string)
    return (message.string or "",)


def _placeholder_problem(message: Message) -> str | None:
    """A translation must use exactly the msgid's parameters, or formatting fails at run time.

    Plural translations may drop a parameter (a language with one form may leave out the
    singular's count) but never add one.
    """
    ids = _ids(message)
    expected = set().union(*(placeholders(part) for part in ids))
    for string in _strings(message):
        found = placeholders(string)
        if found - expected or (len(ids) == 1 and found != expected):
            return f"placeholders differ ({string!r})"
    return None


def check(capability: str, language: str = "ko") -> list[Finding]:
    """Every msgid of the capability that has no usable translation in `language`.

    Counts msgids found in the source but absent from the catalogue, empty and fuzzy entries,
    and translations whose `{placeholders}` differ from the msgid's (they would fail to format).
    """
    path = catalogue_path(capability, language)
    if not path.is_file():
        return []
    catalogue = _read(path, language)
    findings: list[Finding] = []
    for message in build_template(capability):
        if message.id and catalogue.get(message.id, message.context) is None:
            findings.append(Finding(capability, language, _ids(message)[0],
                                    "missing from the catalogue"))
    for message in catalogue:
        if not message.id:
            continue
        if message.fuzzy or not all(_strings(message)):
            findings.append(Finding(capability, language, _ids(message)[0],
                                    "fuzzy" if message.fuzzy else "not translated"))
            continue
        problem = _placeholder_problem(message)
        if problem:
            findings.append(Finding(capability, language, _ids(message)[0], problem))
    return findings


def _selected(names: Iterable[str]) -> list[str]:
    chosen = list(names) or capabilities()
    unknown = sorted(set(chosen) - set(capabilities()))
    if unknown:
        raise SystemExit(f"unknown capability: {', '.join(unknown)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=("extract", "update", "check"))
    parser.add_argument("capabilities", nargs="*", help="default: every capability")
    parser.add_argument("--language", default="ko",
                        help="check: the catalogue language to check (ko, ja, zh_Hans, ...)")
    arguments = parser.parse_intermixed_args(argv)
    names = _selected(arguments.capabilities)
    if arguments.command == "extract":
        for name in names:
            written = extract(name)
            if written is not None:
                print(written.relative_to(REPOSITORY))
        return 0
    if arguments.command == "update":
        for name in names:
            for language, outcome in update(name, create=bool(arguments.capabilities)).items():
                print(f"{catalogue_path(name, language).relative_to(REPOSITORY)}: {outcome}")
        return 0
    language = arguments.language
    named = "Korean" if language == "ko" else language
    findings = [finding for name in names if (locales_directory(name) / language).is_dir()
                for finding in check(name, language)]
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} message(s) without a usable {named} translation",
              file=sys.stderr)
        return 1
    print(f"every msgid has a {named} translation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
