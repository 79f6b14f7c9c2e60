"""Translations: the catalogues are complete and well-formed, the pipeline keeps them so without
ever damaging a team's hand-kept catalogue, and pages pick the right language and direction."""

from __future__ import annotations

import functools
import gettext
import importlib.util
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from jaejin.core.accounts import Role
from jaejin.core.i18n import (
    LANGUAGE_NAMES,
    RIGHT_TO_LEFT,
    SUPPORTED_LANGUAGES,
    compile_catalogues,
    locale_directory_name,
    negotiate_language,
    normalise_language,
    translate,
    translate_plural,
)
from jaejin.scheduling.model import VISIT_TYPES_BY_CODE, VisitMode
from jaejin.scheduling.reminders import reminder_text
from tests.support import sign_in

REPOSITORY = Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY / "scripts" / "i18n.py"
PLATFORM = ("core", "accounts", "directory", "web")


def _load_pipeline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jaejin_i18n_pipeline", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pipeline = _load_pipeline()


def _catalogue(path: Path):  # type: ignore[no-untyped-def]
    with path.open("rb") as po_file:
        return read_po(po_file)


# ------------------------------------------------------------------------ the catalogues we ship


@pytest.mark.parametrize("capability", PLATFORM)
def test_every_platform_message_has_a_korean_translation(capability: str) -> None:
    findings = pipeline.check(capability)
    assert [str(finding) for finding in findings] == []


def test_the_check_command_passes_for_the_platform_catalogues() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "check", *PLATFORM],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path", sorted(REPOSITORY.glob("jaejin/*/locales/*/LC_MESSAGES/messages.po")),
    ids=lambda path: "/".join(path.parts[-5:-2]))
def test_translations_use_exactly_the_placeholders_of_their_message(path: Path) -> None:
    """A `{name}` missing or misspelt in a translation makes `translate` fail for that user."""
    mismatches = [
        (message.id, message.string) for message in _catalogue(path)
        if message.id and all(pipeline._strings(message))
        and pipeline._placeholder_problem(message)
    ]
    assert mismatches == []


def test_a_message_shared_by_platform_catalogues_reads_the_same_in_each() -> None:
    seen: dict[str, tuple[str, str]] = {}
    conflicts = []
    for capability in PLATFORM:
        for message in _catalogue(pipeline.catalogue_path(capability, "ko")):
            if not message.id or not isinstance(message.id, str):
                continue
            earlier = seen.setdefault(message.id, (capability, message.string))
            if earlier[1] != message.string:
                conflicts.append((message.id, earlier, (capability, message.string)))
    assert conflicts == []


def test_compiled_catalogues_load_as_gettext_translations() -> None:
    written = compile_catalogues()
    assert {path.parts[-5] for path in written} >= set(PLATFORM)
    for path in written:
        with path.open("rb") as mo_file:
            gettext.GNUTranslations(mo_file)


def test_korean_is_returned_for_known_messages_with_their_parameters() -> None:
    compile_catalogues()
    assert translate("ko", "Sign out") == "로그아웃"
    assert translate("ko", "Welcome, {name}", name="김재진") == "김재진 님, 환영합니다"
    throttled = translate("ko", "Too many failed attempts. Try again in {minutes} minutes.",
                          minutes=15)
    assert throttled == "로그인 실패 횟수가 너무 많습니다. 15분 후에 다시 시도해 주세요."
    assert translate("en", "Sign out") == "Sign out"


def test_a_language_without_a_catalogue_falls_back_to_english() -> None:
    compile_catalogues()
    without = [language for language in SUPPORTED_LANGUAGES
               if locale_directory_name(language) not in {"ko", "en", *COMPLETE_LANGUAGES}]
    for language in without:
        assert translate(language, "Sign out") == "Sign out"
        assert translate(language, "Welcome, {name}", name="佐藤") == "Welcome, 佐藤"
    # A message no catalogue knows (yet) reads in English in every language, never fails.
    for language in SUPPORTED_LANGUAGES:
        assert translate(language, "Not in any catalogue, {name}", name="X") == (
            "Not in any catalogue, X")


# ------------------------------------------------------- the other languages patients read

#: Languages translated in full for every capability (gettext directory names). A language is
#: listed only when complete: a half-translated page is worse for a patient than English.
COMPLETE_LANGUAGES = ("ja", "zh_Hans", "zh_Hant", "ru", "vi", "th", "mn", "ar")
#: Capabilities whose catalogues the patients' languages must cover.
CAPABILITIES = tuple(sorted(path.parent.name for path in REPOSITORY.glob("jaejin/*/locales")))


def _reference_messages(capability: str) -> dict[object, object]:
    """The capability's messages as its Korean and English catalogues list them."""
    messages: dict[object, object] = {}
    for language in ("en", "ko"):
        path = pipeline.catalogue_path(capability, language)
        if path.is_file():
            for message in _catalogue(path):
                if message.id:
                    messages.setdefault((message.context, pipeline._ids(message)[0]), message)
    return messages


def test_only_complete_languages_have_catalogues() -> None:
    present = {path.parts[-2] for path in REPOSITORY.glob("jaejin/*/locales/*/LC_MESSAGES")}
    assert present <= {"ko", "en", *COMPLETE_LANGUAGES}
    for language in COMPLETE_LANGUAGES:
        assert language in {locale_directory_name(tag) for tag in SUPPORTED_LANGUAGES}
        for capability in CAPABILITIES:
            assert pipeline.catalogue_path(capability, language).is_file(), (capability, language)


@pytest.mark.parametrize("language", COMPLETE_LANGUAGES)
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_every_message_is_translated_with_its_placeholders(capability: str,
                                                           language: str) -> None:
    catalogue = _catalogue(pipeline.catalogue_path(capability, language))
    assert catalogue.locale is not None and str(catalogue.locale).startswith(language[:2])
    # The language's own plural rule (CLDR): one form in Japanese and Chinese, three in Russian.
    assert catalogue.num_plurals == Catalog(locale=language).num_plurals
    problems = []
    for (context, msgid), reference in _reference_messages(capability).items():
        message = catalogue.get(reference.id, context)
        if message is None:
            problems.append(("missing", msgid))
        elif message.fuzzy or not all(pipeline._strings(message)):
            problems.append(("not translated", msgid))
        elif isinstance(message.string, (list, tuple)) and (
                len(message.string) != catalogue.num_plurals):
            problems.append(("plural forms", msgid))
        elif pipeline._placeholder_problem(message):
            problems.append(("placeholders", msgid))
    assert problems == []


@functools.cache
def _source_messages(capability: str) -> frozenset[tuple[object, object]]:
    """The msgids the extractor finds in the capability's source (extracted once per run)."""
    return frozenset((message.context, pipeline._ids(message)[0])
                     for message in pipeline.build_template(capability) if message.id)


@pytest.mark.parametrize("language", COMPLETE_LANGUAGES)
def test_every_message_in_the_platform_source_is_in_each_language(language: str) -> None:
    """Also catches msgids found in the source that the ko/en catalogues do not list yet."""
    missing = []
    for capability in PLATFORM:
        catalogue = _catalogue(pipeline.catalogue_path(capability, language))
        missing += [(capability, msgid) for context, msgid in _source_messages(capability)
                    if catalogue.get(msgid, context) is None]
    assert missing == []


@pytest.mark.parametrize("language", COMPLETE_LANGUAGES)
def test_a_message_reads_the_same_in_every_capability(language: str) -> None:
    seen: dict[object, tuple[str, object]] = {}
    conflicts = []
    for capability in CAPABILITIES:
        for message in _catalogue(pipeline.catalogue_path(capability, language)):
            if not message.id:
                continue
            key = (message.context, pipeline._ids(message))
            earlier = seen.setdefault(key, (capability, message.string))
            if earlier[1] != message.string:
                conflicts.append((key, earlier, (capability, message.string)))
    assert conflicts == []


@pytest.mark.parametrize(("language", "expected"), [
    ("ru", {"Sign out": "Выйти", "Welcome, {name}": "Добро пожаловать, 佐藤",
            "Blood pressure": "Артериальное давление", "Glucose": "Глюкоза"}),
    ("ja", {"Sign out": "ログアウト", "Welcome, {name}": "ようこそ、佐藤様",
            "Blood pressure": "血圧", "Glucose": "血糖"}),
    ("zh-Hans", {"Sign out": "退出登录", "Welcome, {name}": "欢迎您，佐藤",
                 "Blood pressure": "血压", "Glucose": "血糖"}),
    ("zh-Hant", {"Sign out": "登出", "Welcome, {name}": "歡迎您，佐藤",
                 "Blood pressure": "血壓", "Glucose": "血糖"}),
])
def test_patients_languages_are_returned_with_their_parameters(
        language: str, expected: dict[str, str]) -> None:
    for message, text in expected.items():
        assert translate(language, message, name="佐藤") == text
    one = translate_plural(language, "{count} day", "{count} days", 1)
    assert one != "1 day"
    if Catalog(locale=locale_directory_name(language)).num_plurals == 1:
        # One plural form: the same words for one day and for three.
        assert one.replace("1", "3") == translate_plural(language, "{count} day",
                                                         "{count} days", 3)


@pytest.mark.parametrize(("header", "lang", "words"), [
    ("ja-JP,ja;q=0.9,en;q=0.5", "ja",
     ("ログイン", "パスワード", "本文へスキップ", "招待を受け取る")),
    ("zh-CN,zh;q=0.9", "zh-Hans", ("登录", "密码", "跳至正文", "接受邀请")),
    ("zh-TW,zh;q=0.9", "zh-Hant", ("登入", "密碼", "跳至主要內容", "接受邀請")),
    ("ru-RU,ru;q=0.9", "ru", ("Войти", "Пароль", "Перейти к содержимому", "Принять приглашение")),
    ("vi-VN,vi;q=0.9", "vi", ("Đăng nhập", "Mật khẩu", "Chuyển đến nội dung", "Nhận lời mời")),
    ("th-TH,th;q=0.9", "th", ("เข้าสู่ระบบ", "รหัสผ่าน", "ข้ามไปยังเนื้อหา", "ตอบรับคำเชิญ")),
    ("mn-MN,mn;q=0.9", "mn", ("Нэвтрэх", "Нууц үг", "Агуулга руу шилжих", "Урилга хүлээн авах")),
    ("ar-EG,ar;q=0.9", "ar", ("تسجيل الدخول", "كلمة المرور", "الانتقال إلى المحتوى", "قبول دعوة")),
])
def test_the_sign_in_page_speaks_the_browsers_language(client, header: str, lang: str,
                                                       words: tuple[str, ...]) -> None:
    page = client.get("/login", headers={"Accept-Language": header})
    assert page.status_code == 200
    direction = "rtl" if lang in RIGHT_TO_LEFT else "ltr"
    assert f'<html lang="{lang}" dir="{direction}">' in page.text
    for word in words:
        assert word in page.text
    for english in ("Sign in", "Password", "Skip to content"):
        assert f">{english}<" not in page.text


def test_russian_counts_take_the_right_plural_form() -> None:
    days = {count: translate_plural("ru", "{count} day", "{count} days", count)
            for count in (1, 3, 5, 11, 21, 22)}
    assert days == {1: "1 день", 3: "3 дня", 5: "5 дней", 11: "11 дней", 21: "21 день",
                    22: "22 дня"}


def test_arabic_counts_take_the_right_plural_form() -> None:
    days = {count: translate_plural("ar", "{count} day", "{count} days", count)
            for count in (0, 1, 2, 3, 11, 100)}
    assert days == {0: "0 يوم", 1: "يوم واحد", 2: "يومان", 3: "3 أيام", 11: "11 يومًا",
                    100: "100 يوم"}


@pytest.mark.parametrize(("language", "zone", "words"), [
    ("ja", "Asia/Tokyo",
     ("リマインダー", "海外にお住まいの方の再診", "ビデオ診療", "東京", "ソウル")),
    ("zh-Hans", "Asia/Shanghai", ("提醒", "境外患者复诊", "视频诊疗", "上海", "首尔")),
    ("zh-Hant", "Asia/Taipei", ("提醒", "境外患者複診", "視訊診療", "台北", "首爾")),
])
def test_a_patient_abroad_reads_the_reminder_in_their_language(
        language: str, zone: str, words: tuple[str, ...]) -> None:
    """The SMS/e-mail reminder text: visit type, mode and both cities in the patient's words."""
    seoul = ZoneInfo("Asia/Seoul")
    text = reminder_text(
        language, visit_type=VISIT_TYPES_BY_CODE["international_follow_up"],
        mode=VisitMode.VIDEO, start=datetime(2026, 3, 10, 9, tzinfo=seoul),
        institution_zone=seoul, recipient_zone=ZoneInfo(zone), practitioner_name="Dr Kim",
        join_url="https://example.org/v/abc")
    for word in (*words, "Dr Kim", "https://example.org/v/abc"):
        assert word in text
    for english in ("reminder", "International follow-up", "video visit", "Join"):
        assert english not in text


def test_a_japanese_patient_books_in_japanese(client, actors, db) -> None:
    patient = actors.person("a", Role.PATIENT)
    patient.user.language = "ja"
    db.commit()
    sign_in(client, patient)
    page = client.get("/appointments/book")
    assert page.status_code == 200, page.text
    assert '<html lang="ja" dir="ltr">' in page.text
    for japanese in ("再診を予約する", "診療の種類", "通訳は必要ですか？", "ログアウト"):
        assert japanese in page.text
    for english in ("Book a follow-up", "Kind of visit", "Do you need an interpreter?"):
        assert english not in page.text


# --------------------------------------------------------------------------- language choice


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_accept_language_header_yields_a_supported_language(header: str) -> None:
    assert negotiate_language(header) in SUPPORTED_LANGUAGES


_TAGS = st.sampled_from(["ko", "ko-KR", "en", "en-US", "ja", "ja-JP", "zh", "zh-CN", "zh-TW",
                         "zh-Hant", "th", "vi", "mn", "ru", "ar", "ar-EG", "fr", "de-DE", "*",
                         "x-klingon", "EN-gb", "zh_hans"])
_QUALITIES = st.one_of(st.none(), st.floats(min_value=0, max_value=1).map(lambda q: f"{q:.3f}"),
                       st.sampled_from(["", "abc", "1.5", "-1", "nan"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TAGS, _QUALITIES), max_size=8))
def test_well_formed_headers_yield_a_supported_language_or_the_default(
        entries: list[tuple[str, str | None]]) -> None:
    header = ", ".join(tag if quality is None else f"{tag};q={quality}"
                       for tag, quality in entries)
    chosen = negotiate_language(header)
    assert chosen in SUPPORTED_LANGUAGES
    if not any(normalise_language(tag) for tag, _quality in entries):
        assert chosen == "ko"


@pytest.mark.parametrize(("header", "expected"), [
    ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
    ("fr-FR,fr;q=0.9,en;q=0.5", "en"),
    ("en;q=0.4, ko;q=0.8", "ko"),
    ("zh-TW", "zh-Hant"),
    ("zh-CN,zh;q=0.9", "zh-Hans"),
    ("ar-EG", "ar"),
    ("", "ko"),
    ("de-DE", "ko"),
])
def test_browser_headers_pick_the_language_a_person_expects(header: str, expected: str) -> None:
    assert negotiate_language(header) == expected


def test_every_supported_language_has_a_name_and_arabic_reads_right_to_left() -> None:
    assert set(LANGUAGE_NAMES) == set(SUPPORTED_LANGUAGES)
    assert set(SUPPORTED_LANGUAGES) >= RIGHT_TO_LEFT
    assert "ar" in RIGHT_TO_LEFT


@pytest.mark.parametrize(("header", "lang", "direction"), [
    ("ar", "ar", "rtl"), ("ko-KR", "ko", "ltr"), ("en-US", "en", "ltr"), ("ja", "ja", "ltr"),
])
def test_pages_declare_their_language_and_direction(client, header: str, lang: str,
                                                    direction: str) -> None:
    page = client.get("/login", headers={"Accept-Language": header})
    assert page.status_code == 200
    assert f'<html lang="{lang}" dir="{direction}">' in page.text


def test_a_korean_page_is_translated_throughout(client) -> None:
    page = client.get("/login", headers={"Accept-Language": "ko"})
    for korean in ("로그인", "이메일", "비밀번호", "본문 바로가기", "초대 수락"):
        assert korean in page.text
    for english in ("Sign in", "Password", "Skip to content"):
        assert f">{english}<" not in page.text


# ---------------------------------------------------------------------- the pipeline itself


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository of two capabilities: `web` (kept by the pipeline), `clinic` (by hand)."""
    package = tmp_path / "jaejin"
    for capability in ("web", "clinic"):
        (package / capability / "templates" / capability).mkdir(parents=True)
        (package / capability / "__init__.py").write_text("")
    shutil.copy(REPOSITORY / "babel.cfg", tmp_path / "babel.cfg")
    (package / "web" / "pages.py").write_text(
        "from jaejin.core.i18n import N_, translate, translate_plural\n"
        "LABEL = N_('Home')\n"
        "def page(lang, n, message):\n"
        "    translate(lang, 'Hello {name}', name=n)\n"
        "    translate(lang, message)\n"
        "    return translate_plural(lang, '{count} file', '{count} files', n)\n")
    (package / "web" / "templates" / "web" / "base.html").write_text(
        '<a>{{ t("Sign out") }}</a> {{ t(link.label) }} {{ t("Hi {name}", name=x) }}\n')
    (package / "clinic" / "rules.py").write_text(
        "from jaejin.core.i18n import N_\nRULE = N_('Closed on Sundays')\n")
    clinic_po = package / "clinic" / "locales" / "ko" / "LC_MESSAGES" / "messages.po"
    clinic_po.parent.mkdir(parents=True)
    clinic_po.write_text(
        '# Hand-kept by the clinic team.\nmsgid ""\nmsgstr ""\n'
        '"Content-Type: text/plain; charset=utf-8\\n"\n"Language: ko\\n"\n\n'
        '# Chosen at run time, so no extractor finds it.\n'
        'msgid "Opening hours"\nmsgstr "진료 시간"\n', encoding="utf-8")
    monkeypatch.setattr(pipeline, "REPOSITORY", tmp_path)
    monkeypatch.setattr(pipeline, "PACKAGE", package)
    monkeypatch.setattr(pipeline, "MAPPING_FILE", tmp_path / "babel.cfg")
    return tmp_path


def _ids(path: Path) -> set[object]:
    return {message.id for message in _catalogue(path) if message.id}


def test_extraction_finds_template_calls_translate_arguments_and_plurals(workspace: Path) -> None:
    template = pipeline.build_template("web")
    ids = {message.id for message in template if message.id}
    assert ids == {"Home", "Hello {name}", ("{count} file", "{count} files"), "Sign out",
                   "Hi {name}"}
    locations = {location for message in template for location, _line in message.locations}
    assert "jaejin/web/templates/web/base.html" in locations


def test_update_merges_the_platform_catalogue_and_marks_vanished_messages_obsolete(
        workspace: Path) -> None:
    pipeline.extract("web")
    pipeline.update("web", create=True)
    korean = pipeline.catalogue_path("web", "ko")
    catalogue = _catalogue(korean)
    catalogue["Sign out"].string = "로그아웃"
    korean.write_text(pipeline._serialise(catalogue), encoding="utf-8")

    base = workspace / "jaejin" / "web" / "templates" / "web" / "base.html"
    base.write_text('<a>{{ t("Sign out") }}</a>\n')
    pipeline.extract("web")
    pipeline.update("web")
    merged = _catalogue(korean)
    assert merged["Sign out"].string == "로그아웃"
    assert merged.get("Hi {name}") is None
    assert "Hi {name}" in merged.obsolete


def test_update_only_appends_to_a_hand_kept_catalogue(workspace: Path) -> None:
    clinic_po = pipeline.catalogue_path("clinic", "ko")
    before = clinic_po.read_bytes()
    pipeline.extract("clinic")
    assert pipeline.update("clinic") == {"ko": "appended 1", "en": "created"}
    after = clinic_po.read_bytes()
    assert after.startswith(before)
    assert _ids(clinic_po) == {"Opening hours", "Closed on Sundays"}
    assert _catalogue(clinic_po)["Opening hours"].string == "진료 시간"
    assert pipeline.update("clinic") == {"ko": "unchanged", "en": "unchanged"}
    assert clinic_po.read_bytes() == after


def test_update_leaves_capabilities_without_locales_alone_unless_named(workspace: Path) -> None:
    (workspace / "jaejin" / "billing").mkdir()
    (workspace / "jaejin" / "billing" / "__init__.py").write_text("")
    (workspace / "jaejin" / "billing" / "fees.py").write_text("_('Fee')\n")
    assert pipeline.update("billing") == {}
    assert not (workspace / "jaejin" / "billing" / "locales").exists()


def test_check_reports_missing_fuzzy_and_misplaced_placeholders(workspace: Path) -> None:
    pipeline.extract("web")
    pipeline.update("web", create=True)
    korean = pipeline.catalogue_path("web", "ko")
    catalogue = _catalogue(korean)
    catalogue["Home"].string = "홈"
    catalogue["Sign out"].string = "로그아웃"
    catalogue["Sign out"].flags.add("fuzzy")
    catalogue["Hello {name}"].string = "{nmae} 님 안녕하세요"
    catalogue["Hi {name}"].string = "{name} 님 안녕하세요"
    catalogue["{count} file"].string = ("파일 {count}개",)
    korean.write_text(pipeline._serialise(catalogue), encoding="utf-8")

    problems = {(finding.msgid, finding.problem.split(" (")[0])
                for finding in pipeline.check("web")}
    assert problems == {("Sign out", "fuzzy"), ("Hello {name}", "placeholders differ")}
    assert pipeline.main(["check", "web"]) == 1


def test_a_template_that_does_not_parse_fails_the_extraction(workspace: Path) -> None:
    broken = workspace / "jaejin" / "web" / "templates" / "web" / "broken.html"
    broken.write_text('{% if %}{{ t("Lost message") }}\n')
    with pytest.raises(TemplateSyntaxError):
        pipeline.build_template("web")
