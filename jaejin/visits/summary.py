"""The encounter summary a closed visit leaves in the record, pure: the note's assessment and
plan, then the prescriptions on the note as the note shows them.

The summary is the text hospital systems read with the encounter (`/api/v1/encounters`) and the
care team sees in the patient's history; it is what the patient and their local physician are
told of the visit. It is written once, when the visit closes, in the patient's language (the
labels only: what the clinician typed stays as typed). Prescriptions withdrawn from the note are
not in it: they were never prescribed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from jaejin.core.i18n import N_, translate

#: The note's own part (assessment and plan) is cut here, as it always was.
NOTE_PART_MAX: Final = 2000
#: The whole summary: the integration API's own limit for an encounter's summary.
SUMMARY_MAX: Final = 10_000

PRESCRIPTIONS_HEADING: Final = N_("Prescriptions")
DAYS_LABEL: Final = N_("Days")
QUANTITY_LABEL: Final = N_("Quantity")


@dataclass(frozen=True, slots=True)
class PrescribedItem:
    """One prescription on the note, as written (`store.VisitPrescription`'s fields)."""

    ingredient: str
    days_supply: int
    atc: str | None = None
    strength: str = ""
    frequency: str = ""
    instructions: str = ""
    quantity: int | None = None


def prescription_line(item: PrescribedItem, language: str) -> str:
    """What the note's table shows for `item`, on one line: ingredient (ATC), strength ·
    frequency · instructions, days, quantity."""
    name = f"{item.ingredient} ({item.atc})" if item.atc else item.ingredient
    how = " · ".join(part.strip() for part in (item.strength, item.frequency, item.instructions)
                     if part.strip())
    facts = [f"{translate(language, DAYS_LABEL)}: {item.days_supply}"]
    if item.quantity is not None:
        facts.append(f"{translate(language, QUANTITY_LABEL)}: {item.quantity}")
    return f"- {name}{': ' + how if how else ''}; {'; '.join(facts)}"


def encounter_summary(assessment: str, plan: str, prescriptions: Sequence[PrescribedItem],
                      language: str) -> str:
    """The summary: assessment and plan, then a "Prescriptions" block when there are any."""
    note_part = "\n".join(part.strip() for part in (assessment, plan)
                          if part.strip())[:NOTE_PART_MAX]
    blocks = [note_part] if note_part else []
    if prescriptions:
        blocks.append("\n".join([translate(language, PRESCRIPTIONS_HEADING),
                                 *(prescription_line(item, language)
                                   for item in prescriptions)]))
    return "\n\n".join(blocks)[:SUMMARY_MAX]


__all__ = ["PrescribedItem", "encounter_summary", "prescription_line"]
