"""Showing an instant to people in different zones, in their language.

"Tue 09:00 Seoul = Mon 19:00 New York": the weekday appears on both sides whenever the two local
dates differ, because that is where people book the wrong day.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton, get_timezone_location

from jaejin.core.i18n import N_, translate
from jaejin.scheduling.zones import ensure_aware, offset_label

# Zones that name an offset rather than a place: shown as "UTC+09:00".
_OFFSET_ONLY_ZONES = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu"}
)

DateStyle = Literal["none", "weekday", "full"]

SIDE_PATTERN = N_("{when} {city}")
DUAL_PATTERN = N_("{institution} = {patient}")


def babel_locale(lang: str) -> Locale:
    """The Babel locale for a Jaejin language tag (`zh-Hans` -> zh_Hans); English if unknown."""
    try:
        return Locale.parse(lang.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


def zone_city_name(zone: ZoneInfo, lang: str, at: datetime) -> str:
    """The exemplar city of `zone` in `lang` ("Seoul", "서울"), or its UTC offset at `at`."""
    key = zone.key
    if key in _OFFSET_ONLY_ZONES or key.startswith("Etc/"):
        offset = ensure_aware(at, "at").astimezone(zone).utcoffset()
        assert offset is not None
        return "UTC" if not offset else f"UTC{offset_label(offset)}"
    city = get_timezone_location(key, locale=babel_locale(lang), return_city=True)
    return str(city).rsplit("/", 1)[-1]


def format_local_time(
    instant: datetime, zone: ZoneInfo, lang: str, *, date_style: DateStyle
) -> str:
    """The wall-clock time of `instant` in `zone`, 24-hour.

    `date_style`: "none" (09:00), "weekday" (Tue 09:00) or "full" (Tue, Mar 10, 09:00).
    """
    locale = babel_locale(lang)
    local = ensure_aware(instant, "instant").astimezone(zone)
    if date_style == "none":
        return format_skeleton("Hm", local, tzinfo=zone, locale=locale)
    if date_style == "weekday":
        return format_skeleton("EHm", local, tzinfo=zone, locale=locale)
    if date_style == "full":
        pattern = str(locale.datetime_formats["short"])
        return pattern.replace(
            "{1}", format_skeleton("MMMEd", local, tzinfo=zone, locale=locale)
        ).replace("{0}", format_skeleton("Hm", local, tzinfo=zone, locale=locale))
    raise ValueError(f"date_style must be none, weekday or full, got {date_style!r}")


def zone_label(
    instant: datetime, zone: ZoneInfo, lang: str, *, date_style: DateStyle = "full"
) -> str:
    """One side of a label: "Tue, Mar 10, 09:00 Seoul" / "서울 3월 10일 (화) 09:00"."""
    return translate(
        lang,
        SIDE_PATTERN,
        when=format_local_time(instant, zone, lang, date_style=date_style),
        city=zone_city_name(zone, lang, instant),
    )


def dual_zone_label(
    instant: datetime, institution_zone: ZoneInfo, patient_zone: ZoneInfo, lang: str
) -> str:
    """ "09:00 Seoul = 08:00 Ulaanbaatar", or with weekdays when the dates differ:
    "Tue 09:00 Seoul = Mon 19:00 New York" (ko: "서울 (화) 09:00 = 뉴욕 (월) 19:00").

    One side only when both zones are the same.
    """
    instant = ensure_aware(instant, "instant")
    at_institution = instant.astimezone(institution_zone)
    at_patient = instant.astimezone(patient_zone)
    style: DateStyle = "none" if at_institution.date() == at_patient.date() else "weekday"
    institution_side = zone_label(instant, institution_zone, lang, date_style=style)
    if institution_zone.key == patient_zone.key:
        return institution_side
    return translate(
        lang,
        DUAL_PATTERN,
        institution=institution_side,
        patient=zone_label(instant, patient_zone, lang, date_style=style),
    )
