"""Demo monitoring: five patients on care plans with weeks of realistic readings, so a demo
clinician opens a triage list that means something.

- 김영수 (BUSAN-IM, hypertension): four calm weeks around 138/86, then a week around 152/96 with
  readings above 160, and a crisis reading half an hour ago (guidance in Korean, 119).
- 이정희 (BUSAN-IM, type 2 diabetes): finger-stick glucose mostly above 180 this week.
- 최지우 (HANGANG-UH, type 1 diabetes): 14 days of CGM every 5 minutes with night-time lows
  (the consensus report misses its targets) and a low this morning.
- Bat-Erdene (HANGANG-UH, after a coronary bypass): a fever since last night, in Ulaanbaatar.
- John Miller (HANGANG-UH, after a thyroidectomy): measured daily from California, then nothing
  for three days.

Both post-operative patients photograph their wound every other day (drawn stand-ins, stored as
real wound photos without metadata, each a review item for the care team).

Readings go through the real ingest (`ingest_items`, one multi-row insert per patient) and the
scheduled checks run once (`jobs.evaluate_plan`), so the alerts are the ones Jaejin raises.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw
from sqlalchemy.orm import Session

from jaejin.core.database import utcnow
from jaejin.demo import DemoContext
from jaejin.directory.store import Patient
from jaejin.monitoring.careplans import PlanTemplate
from jaejin.monitoring.ingest import IngestPatient, ingest_items
from jaejin.monitoring.jobs import evaluate_plan
from jaejin.monitoring.parsers import ParsedItem
from jaejin.monitoring.photo_store import store_wound_photo
from jaejin.monitoring.photos import prepare_photo
from jaejin.monitoring.readings import (
    CANONICAL_UNITS,
    LOINC_GLUCOSE_BLOOD_MASS,
    LOINC_GLUCOSE_CGM,
    METRIC_SPECS,
    Metric,
    Reading,
)
from jaejin.monitoring.store import CarePlanRow, ReadingChannel, actor_ref

SEED = 20260105
CGM_STEP = timedelta(minutes=5)


class _Readings:
    """Readings of one demo patient, each measurement an item (a panel is one item)."""

    def __init__(self, patient: Patient, device: str, rng: random.Random) -> None:
        self.patient = patient
        self.zone = ZoneInfo(patient.time_zone)
        self.device = device
        self.rng = rng
        self.items: list[tuple[Reading, ...]] = []
        #: When the patient photographed their wound (stored as photos, `_store_photos`).
        self.photo_times: list[datetime] = []

    def _reading(self, metric: Metric, value: float, at: datetime, *, loinc: str | None = None,
                 panel_id: str | None = None) -> Reading:
        return Reading(
            patient_ref=str(self.patient.id), metric=metric, value=round(float(value), 1),
            unit=CANONICAL_UNITS[metric], loinc=loinc or METRIC_SPECS[metric].primary_loinc,
            effective_at=at.astimezone(self.zone), source_device=self.device,
            received_at=at + timedelta(seconds=self.rng.randint(20, 300)), panel_id=panel_id,
        )

    def local(self, now: datetime, days_ago: int, hour: float) -> datetime:
        """`hour` o'clock (the patient's clock) `days_ago` days before today."""
        day = (now.astimezone(self.zone) - timedelta(days=days_ago)).date()
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return (midnight + timedelta(hours=hour)).astimezone(ZoneInfo("UTC"))

    def blood_pressure(self, at: datetime, systolic: float, diastolic: float,
                       heart_rate: float | None = None) -> None:
        panel = f"demo-{self.patient.id}-{int(at.timestamp())}"
        self.items.append((self._reading(Metric.SYSTOLIC, systolic, at, panel_id=panel),
                           self._reading(Metric.DIASTOLIC, diastolic, at, panel_id=panel)))
        if heart_rate is not None:
            self.items.append((self._reading(Metric.HEART_RATE, heart_rate, at),))

    def single(self, metric: Metric, value: float, at: datetime,
               loinc: str | None = None) -> None:
        self.items.append((self._reading(metric, value, at, loinc=loinc),))

    def wound_photo(self, at: datetime) -> None:
        self.photo_times.append(at)

    def parsed(self, now: datetime) -> list[ParsedItem]:
        kept = sorted((item for item in self.items if item[0].effective_at <= now),
                      key=lambda item: item[0].effective_ts)
        return [ParsedItem(index, item) for index, item in enumerate(kept)]


def _plan(db: Session, demo: DemoContext, patient_key: str, template: PlanTemplate,
          clinician_key: str, since: datetime,
          overrides: dict[str, object] | None = None) -> CarePlanRow:
    patient = demo.patients[patient_key]
    row = CarePlanRow(
        patient_id=patient.id, institution_id=patient.institution_id, template=template.value,
        overrides=overrides or {}, created_by=actor_ref("user", demo.users[clinician_key].id),
        active=True, created_at=since,
    )
    db.add(row)
    return row


def _kim_youngsu(patient: Patient, now: datetime, rng: random.Random) -> _Readings:
    """Hypertension: calm for four weeks, then a worse week and a crisis reading today."""
    readings = _Readings(patient, "Omron HEM-7156T", rng)
    for days_ago in range(35, 0, -1):
        worse = days_ago <= 7
        for hour, surge in ((7.2, 6.0), (21.0, 0.0)):
            base_systolic = 151.0 if worse else 137.0
            base_diastolic = 95.0 if worse else 86.0
            systolic = base_systolic + surge + rng.gauss(0, 4)
            diastolic = base_diastolic + surge / 3 + rng.gauss(0, 3)
            if worse and days_ago in (2, 4, 6) and hour < 12:
                systolic, diastolic = 163 + rng.random() * 4, 99 + rng.random() * 3
            readings.blood_pressure(readings.local(now, days_ago, hour + rng.random() / 3),
                                    systolic, diastolic, 72 + rng.gauss(0, 4))
    readings.blood_pressure(now - timedelta(hours=9), 158, 97, 76)
    readings.blood_pressure(now - timedelta(minutes=32), 184, 108, 88)
    return readings


def _lee_junghee(patient: Patient, now: datetime, rng: random.Random) -> _Readings:
    """Type 2 diabetes: fasting and after-dinner finger-sticks, high all this week."""
    readings = _Readings(patient, "Accu-Chek Guide", rng)
    for days_ago in range(28, 0, -1):
        high = days_ago <= 7
        fasting = (162 if high else 118) + rng.gauss(0, 10)
        after_dinner = (228 if high else 165) + rng.gauss(0, 18)
        readings.single(Metric.GLUCOSE, fasting, readings.local(now, days_ago, 7.5),
                        LOINC_GLUCOSE_BLOOD_MASS)
        readings.single(Metric.GLUCOSE, after_dinner, readings.local(now, days_ago, 20.5),
                        LOINC_GLUCOSE_BLOOD_MASS)
    return readings


def _cgm_value(local: datetime, rng: random.Random, drift: float) -> float:
    hour = local.hour + local.minute / 60
    value = 122.0 + drift
    value += 35 * math.exp(-((hour - 6.5) ** 2) / 2.0)  # dawn phenomenon
    for meal, size in ((8.0, 95.0), (12.5, 70.0), (19.0, 110.0)):
        after = hour - meal
        if 0 <= after <= 4.0:
            # Rises for about an hour, then the bolus brings it down.
            value += size * (after / 1.1) * math.exp(1 - after / 1.1)
    if 1.5 <= hour <= 5.0 and local.day % 2 == 0:
        # Lows on every other night: the basal insulin rate is too high.
        value -= 90 * math.sin(math.pi * (hour - 1.5) / 3.5)
    return max(42.0, min(380.0, value + rng.gauss(0, 12)))


def _choi_jiwoo(patient: Patient, now: datetime, rng: random.Random) -> _Readings:
    """Type 1 diabetes on CGM: 14 days every 5 minutes, a sensor change, lows at night, and a
    low this morning (level 1 for 25 minutes, an hour ago)."""
    readings = _Readings(patient, "Dexcom G7", rng)
    # The first reading falls just inside the 14 days: none lies in the 14 days before (a
    # single stray reading there would read as a whole "previous fortnight").
    start = (now - timedelta(days=14)).replace(second=0, microsecond=0)
    start += timedelta(minutes=5 - start.minute % 5)
    sensor_change = start + timedelta(days=10, hours=9)
    drift = 0.0
    moment = start
    while moment <= now - CGM_STEP:
        drift = 0.98 * drift + rng.gauss(0, 3.5)
        if sensor_change <= moment < sensor_change + timedelta(hours=2):
            moment += CGM_STEP  # sensor warm-up: no data
            continue
        if rng.random() < 0.01:
            moment += CGM_STEP  # a missed transmission
            continue
        local = moment.astimezone(readings.zone)
        value = _cgm_value(local, rng, drift)
        minutes_ago = (now - moment) / timedelta(minutes=1)
        if 60 <= minutes_ago <= 85:
            value = 63 + rng.random() * 4
        readings.single(Metric.GLUCOSE, value, moment, LOINC_GLUCOSE_CGM)
        moment += CGM_STEP
    return readings


def _post_operative(patient: Patient, now: datetime, rng: random.Random, days: int,
                    stop_days_ago: int, fever_hours: float | None, device: str) -> _Readings:
    """Twice-daily temperature and pulse, daily blood pressure and SpO2, and a wound photo
    every other day after surgery."""
    readings = _Readings(patient, device, rng)
    for days_ago in range(days - 1, stop_days_ago - 1, -2):
        readings.wound_photo(readings.local(now, days_ago, 10.0 + rng.random()))
    for days_ago in range(days, stop_days_ago - 1, -1):
        for hour in (8.0, 20.0):
            at = readings.local(now, days_ago, hour + rng.random() / 2)
            if at > now:
                continue
            temperature = 36.6 + (0.3 if hour > 12 else 0.0) + rng.gauss(0, 0.15)
            pulse = 78 + rng.gauss(0, 5)
            if fever_hours is not None and now - at <= timedelta(hours=fever_hours):
                temperature, pulse = 38.3 + rng.random() * 0.5, 104 + rng.gauss(0, 4)
            readings.single(Metric.BODY_TEMPERATURE, temperature, at)
            readings.single(Metric.HEART_RATE, pulse, at)
        morning = readings.local(now, days_ago, 9.0)
        if morning <= now:
            readings.blood_pressure(morning, 124 + rng.gauss(0, 6), 78 + rng.gauss(0, 4))
            readings.single(Metric.SPO2, 96.5 + rng.gauss(0, 0.8), morning)
    if fever_hours is not None:
        readings.single(Metric.BODY_TEMPERATURE, 38.7, now - timedelta(hours=1, minutes=10))
    return readings


def _store(db: Session, patient: Patient, readings: _Readings, now: datetime) -> None:
    ingest_items(db, IngestPatient.of(patient), readings.parsed(now), ReadingChannel.JSON,
                 key_prefix="demo", received_at=now)
    _store_photos(db, patient, readings, now)


def demo_wound_image(seed: int, healed: float) -> bytes:
    """A drawn stand-in for a phone photo of a stitched incision: skin, the scar, stitches and
    redness that fades as `healed` goes from 0 to 1. The same seed draws the same file."""
    rng = random.Random(seed)
    width, height = 480, 360
    skin = (222 + rng.randint(-8, 8), 178 + rng.randint(-8, 8), 152 + rng.randint(-8, 8))
    image = Image.new("RGB", (width, height), skin)
    draw = ImageDraw.Draw(image)
    for _ in range(400):  # the grain of skin under a phone camera
        x, y = rng.randrange(width), rng.randrange(height)
        shade = rng.randint(-10, 10)
        draw.point((x, y), fill=tuple(max(0, min(255, channel + shade)) for channel in skin))
    redness = int(60 * (1 - healed))
    draw.ellipse((90, 140, 390, 220), fill=(min(255, skin[0] + redness // 3),
                                             max(0, skin[1] - redness), max(0, skin[2] - redness)))
    draw.line((110, 180 + rng.randint(-4, 4), 370, 180 + rng.randint(-4, 4)),
              fill=(150, 60, 60), width=4)
    for x in range(130, 360, 28):
        draw.line((x, 166, x + 4, 194), fill=(40, 40, 70), width=2)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _store_photos(db: Session, patient: Patient, readings: _Readings, now: datetime) -> None:
    """The wound photos the patient sent, through the real store (a review item each)."""
    times = sorted(at for at in readings.photo_times if at <= now)
    uploaded_by = actor_ref("user", patient.user_id) if patient.user_id else "system:demo"
    for number, at in enumerate(times):
        photo = prepare_photo(demo_wound_image(patient.id * 100 + number,
                                               (number + 1) / (len(times) + 1)))
        store_wound_photo(db, patient, photo, taken_at=at.astimezone(readings.zone),
                          received_at=at + timedelta(minutes=2), uploaded_by=uploaded_by,
                          body_site="incision", note="")


def _scheduled(db: Session, rows: list[CarePlanRow], now: datetime) -> None:
    for row in rows:
        evaluate_plan(db, row, now)
        row.evaluated_at = now


def _iter_demo(demo: DemoContext, now: datetime) -> Iterator[
    tuple[str, PlanTemplate, str, datetime, dict[str, object] | None]
]:
    yield "kim_youngsu", PlanTemplate.HYPERTENSION, "dr_park", now - timedelta(days=40), None
    yield "lee_junghee", PlanTemplate.TYPE2_DIABETES, "dr_park", now - timedelta(days=30), None
    yield ("choi_jiwoo", PlanTemplate.TYPE1_DIABETES_CGM, "dr_choi", now - timedelta(days=20),
           None)
    yield "bat_erdene", PlanTemplate.POST_OPERATIVE, "dr_lee", now - timedelta(days=5), None
    yield "john_miller", PlanTemplate.POST_OPERATIVE, "dr_lee", now - timedelta(days=14), None


def load_demo(db: Session, demo: DemoContext) -> None:
    """Care plans, readings and the alerts they raise for the demo's monitored patients."""
    now = utcnow().replace(microsecond=0)
    rng = random.Random(SEED)
    rows = [
        _plan(db, demo, key, template, clinician, since, overrides)
        for key, template, clinician, since, overrides in _iter_demo(demo, now)
    ]
    db.flush()
    patients = demo.patients
    _store(db, patients["kim_youngsu"], _kim_youngsu(patients["kim_youngsu"], now, rng), now)
    _store(db, patients["lee_junghee"], _lee_junghee(patients["lee_junghee"], now, rng), now)
    _store(db, patients["choi_jiwoo"], _choi_jiwoo(patients["choi_jiwoo"], now, rng), now)
    _store(db, patients["bat_erdene"], _post_operative(
        patients["bat_erdene"], now, rng, days=5, stop_days_ago=0, fever_hours=14,
        device="Microlife NC 150"), now)
    _store(db, patients["john_miller"], _post_operative(
        patients["john_miller"], now, rng, days=14, stop_days_ago=3, fever_hours=None,
        device="Withings Thermo"), now)
    _scheduled(db, rows, now)
