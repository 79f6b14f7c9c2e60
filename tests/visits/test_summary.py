"""The encounter summary a closed visit leaves: the note's assessment and plan, then the
prescriptions as the note shows them, labelled in the patient's language."""

from __future__ import annotations

from jaejin.visits.summary import (
    NOTE_PART_MAX,
    SUMMARY_MAX,
    PrescribedItem,
    encounter_summary,
    prescription_line,
)

AMLODIPINE = PrescribedItem(ingredient="amlodipine", days_supply=30, atc="C08CA01",
                            strength="5 mg tablet", frequency="once a day",
                            instructions="Take in the morning.", quantity=30)
CETIRIZINE = PrescribedItem(ingredient="cetirizine", days_supply=7)


def test_a_prescription_reads_as_the_notes_table_shows_it():
    assert prescription_line(AMLODIPINE, "en") == (
        "- amlodipine (C08CA01): 5 mg tablet · once a day · Take in the morning.; "
        "Days: 30; Quantity: 30")
    assert prescription_line(CETIRIZINE, "en") == "- cetirizine; Days: 7"


def test_the_labels_are_in_the_patients_language_and_the_clinicians_words_stay():
    summary = encounter_summary("Controlled.", "Continue.", [AMLODIPINE, CETIRIZINE], "ja")
    assert summary == (
        "Controlled.\nContinue.\n\n"
        "処方\n"
        "- amlodipine (C08CA01): 5 mg tablet · once a day · Take in the morning.; "
        "日数: 30; 数量: 30\n"
        "- cetirizine; 日数: 7")
    assert "처방\n" in encounter_summary("", "", [CETIRIZINE], "ko")


def test_without_prescriptions_the_summary_is_the_note_as_before():
    assert encounter_summary(" Stable. ", "", [], "ko") == "Stable."
    assert encounter_summary("", "", [], "en") == ""


def test_a_long_note_is_cut_but_its_prescriptions_are_kept():
    summary = encounter_summary("x" * 5000, "", [AMLODIPINE], "en")
    assert summary.startswith("x" * NOTE_PART_MAX + "\n\nPrescriptions\n- amlodipine")
    assert len(encounter_summary("", "", [AMLODIPINE] * 100, "en")) <= SUMMARY_MAX
