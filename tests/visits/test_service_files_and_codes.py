"""What a shared file really is (its bytes decide, never its name), safe file names, and the
bundled KCD code list the note searches."""

from __future__ import annotations

import io
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jaejin.directory.model import check_condition_code
from jaejin.visits.service import (
    ATTACHMENT_MAX_BYTES,
    FileRefused,
    check_file,
    condition_codes,
    safe_filename,
    search_conditions,
    sniff,
)


def image_bytes(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format=kind)
    return buffer.getvalue()


PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
WINDOWS_PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200)


def refusal(filename: str, content: bytes) -> str:
    with pytest.raises(FileRefused) as refused:
        check_file(filename, content)
    return refused.value.problem.code


@pytest.mark.parametrize(("filename", "kind", "expected"), [
    ("rash.png", "PNG", "image/png"),
    ("rash.JPG", "JPEG", "image/jpeg"),
    ("wound.jpeg", "JPEG", "image/jpeg"),
    ("scan.webp", "WEBP", "image/webp"),
    ("scan.gif", "GIF", "image/gif"),
])
def test_real_images_are_kept_with_the_type_their_bytes_show(filename: str, kind: str,
                                                             expected: str) -> None:
    assert check_file(filename, image_bytes(kind)) == expected


def test_documents_and_text_are_kept() -> None:
    assert check_file("referral.pdf", PDF) == "application/pdf"
    assert check_file("readings.csv", "날짜,수축기\n2026-11-01,128\n".encode()) == (
        "text/csv; charset=utf-8")
    assert check_file("notes.txt", b"feels better") == "text/plain; charset=utf-8"


def test_a_program_named_like_an_image_is_refused() -> None:
    assert sniff(WINDOWS_PROGRAM) == "application/x-executable"
    assert refusal("photo.png", WINDOWS_PROGRAM) == "FILE_CONTENT_MISMATCH"
    assert refusal("notes.txt", b"#!/bin/sh\nrm -rf /\n") == "FILE_CONTENT_MISMATCH"
    assert refusal("results.pdf", b"PK\x03\x04" + bytes(100)) == "FILE_CONTENT_MISMATCH"


def test_a_file_of_one_allowed_kind_named_as_another_is_refused() -> None:
    assert refusal("photo.jpg", PDF) == "FILE_CONTENT_MISMATCH"
    assert refusal("scan.png", image_bytes("JPEG")) == "FILE_CONTENT_MISMATCH"
    assert refusal("notes.txt", image_bytes("PNG")) == "FILE_CONTENT_MISMATCH"


def test_damaged_images_and_binary_text_are_refused() -> None:
    assert refusal("photo.png", image_bytes("PNG")[:40]) == "FILE_CONTENT_MISMATCH"
    assert refusal("notes.txt", b"\xff\xfe\x00\x01binary") == "FILE_CONTENT_MISMATCH"
    assert refusal("referral.pdf", b"%PDF-1.4 truncated") == "FILE_CONTENT_MISMATCH"


def test_kinds_that_are_never_shared_empty_and_oversized_files_are_refused() -> None:
    assert refusal("setup.exe", WINDOWS_PROGRAM) == "FILE_TYPE_NOT_ALLOWED"
    assert refusal("page.html", b"<script>alert(1)</script>") == "FILE_TYPE_NOT_ALLOWED"
    assert refusal("no-extension", b"text") == "FILE_TYPE_NOT_ALLOWED"
    assert refusal("empty.txt", b"") == "FILE_EMPTY"
    assert refusal("huge.txt", b"a" * (ATTACHMENT_MAX_BYTES + 1)) == "FILE_TOO_LARGE"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_sniffing_any_bytes_answers_without_failing(content: bytes) -> None:
    assert sniff(content) in {None, "text/plain", "application/pdf", "image/png", "image/jpeg",
                              "image/gif", "image/webp", "application/x-executable"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_a_safe_file_name_has_no_folders_no_control_characters_and_a_bounded_length(
        name: str) -> None:
    clean = safe_filename(name)
    assert clean and len(clean) <= 200
    assert "/" not in clean and "\\" not in clean and not clean.startswith(".")
    assert not any(ord(character) < 32 or ord(character) == 127 for character in clean)


def test_a_long_file_name_keeps_its_extension() -> None:
    assert safe_filename("../../" + "가" * 300 + ".png").endswith(".png")
    assert len(safe_filename("x" * 300 + ".pdf")) == 200


def test_the_bundled_codes_are_well_formed_unique_and_named_in_both_languages() -> None:
    entries = condition_codes()
    assert len(entries) >= 250
    assert len({entry.code for entry in entries}) == len(entries)
    for entry in entries:
        assert check_condition_code(entry.code) == entry.code
        assert entry.name_ko and entry.name_en
        assert entry.specialty in {"dermatology", "internal_medicine", "diabetes", "surgery",
                                   "oncology"}
    demo_codes = {"I10", "E11.9", "E78.5", "L81.4", "L90.5", "L57.0", "L70.0", "C73", "C50.9",
                  "M48.06", "I25.1", "C22.0", "C16.9", "E10.9"}
    assert demo_codes <= {entry.code for entry in entries}


def test_code_search_puts_code_matches_first_then_the_clinicians_specialty() -> None:
    assert [entry.code for entry in search_conditions("I10")][:1] == ["I10"]
    assert search_conditions("e119")[0].code == "E11.9"
    assert search_conditions("  ") == []
    diabetic = search_conditions("당뇨병", specialty="diabetes", limit=5)
    assert [entry.specialty for entry in diabetic] == ["diabetes"] * 5
    hypertension = search_conditions("hypertension", specialty="internal_medicine")
    assert hypertension and all("ypertens" in entry.name_en for entry in hypertension)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + ". 가나다", max_size=12))
def test_code_search_answers_any_query_within_its_limit(query: str) -> None:
    assert len(search_conditions(query, limit=7)) <= 7
