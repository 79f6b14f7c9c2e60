"""A demo that tells a true story: three institutions, their staff, and patients from ten countries.

Dates are relative to today, so the follow-ups that are allowed stay allowed whenever the demo is
loaded. Capabilities add their own demo records (appointments, readings) through `EXTENSIONS`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role, User
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.database import session_scope, utcnow
from jaejin.directory.store import (
    Consent,
    Encounter,
    Institution,
    Interpreter,
    LocalPhysician,
    Patient,
    Practitioner,
    PractitionerRole,
)

log = logging.getLogger(__name__)
DEMO_PASSWORD = "jaejin-demo-2026"  # noqa: S105 - published demo credential, demo data only
#: Demo clinicians and admins share this TOTP secret so a tester can sign in with any
#: authenticator app (or `python -c "import pyotp; print(pyotp.TOTP('...').now())"`).
DEMO_TOTP_SECRET = "JAEJINDEMOTOTPKEYTWOZEROTWOSIXAB"  # noqa: S105 - demo data only

#: Modules exposing `load_demo(db: Session, demo: DemoContext) -> None`.
EXTENSIONS: tuple[str, ...] = (
    "jaejin.scheduling.demo",
    "jaejin.monitoring.demo",
    "jaejin.visits.demo",
)


@dataclass
class DemoContext:
    """What the core demo created, by stable keys, for capabilities to build on."""

    today: date
    institutions: dict[str, Institution] = field(default_factory=dict)
    practitioners: dict[str, Practitioner] = field(default_factory=dict)
    patients: dict[str, Patient] = field(default_factory=dict)
    interpreters: dict[str, Interpreter] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    logins: list[tuple[str, str, str]] = field(default_factory=list)


INSTITUTIONS: list[dict[str, Any]] = [
    {"code": "SEOUL-DERM", "name_ko": "서울맑은피부과의원",
     "name_en": "Seoul Clear Skin Dermatology Clinic", "kind": "clinic", "region": "KR-11",
     "designations": ["international_patient_registration"]},
    {"code": "BUSAN-IM", "name_ko": "해운대바른내과의원",
     "name_en": "Haeundae Internal Medicine Clinic", "kind": "clinic", "region": "KR-26",
     "designations": []},
    {"code": "HANGANG-UH", "name_ko": "한강대학교병원 국제진료센터",
     "name_en": "Hangang University Hospital International Healthcare Centre",
     "kind": "tertiary_hospital", "region": "KR-11",
     "designations": ["international_patient_registration", "overseas_koreans_sandbox"]},
]

STAFF: list[dict[str, Any]] = [
    {"key": "dr_kim", "email": "dr.kim@seoul-derm.demo", "name": "김서연 Kim Seo-yeon",
     "role": Role.CLINICIAN, "institution": "SEOUL-DERM", "licence": "MD-104233",
     "specialty": "dermatology", "languages": ["ko", "en", "ja"], "native": "김서연",
     "latin": "Kim Seo-yeon"},
    {"key": "dr_park", "email": "dr.park@busan-im.demo", "name": "박준호 Park Jun-ho",
     "role": Role.CLINICIAN, "institution": "BUSAN-IM", "licence": "MD-088121",
     "specialty": "internal_medicine", "languages": ["ko"], "native": "박준호",
     "latin": "Park Jun-ho"},
    {"key": "dr_lee", "email": "dr.lee@hangang.demo", "name": "이민지 Lee Min-ji",
     "role": Role.CLINICIAN, "institution": "HANGANG-UH", "licence": "MD-120877",
     "specialty": "surgery", "languages": ["ko", "en"], "native": "이민지",
     "latin": "Lee Min-ji"},
    {"key": "dr_choi", "email": "dr.choi@hangang.demo", "name": "최현우 Choi Hyun-woo",
     "role": Role.CLINICIAN, "institution": "HANGANG-UH", "licence": "MD-097310",
     "specialty": "oncology", "languages": ["ko", "en"], "native": "최현우",
     "latin": "Choi Hyun-woo"},
    {"key": "coordinator", "email": "coordinator@hangang.demo", "name": "정하은 Jung Ha-eun",
     "role": Role.COORDINATOR, "institution": "HANGANG-UH", "languages": ["ko", "en", "zh-Hans"]},
    {"key": "admin_hangang", "email": "admin@hangang.demo", "name": "한강병원 관리자",
     "role": Role.INSTITUTION_ADMIN, "institution": "HANGANG-UH"},
    {"key": "admin_busan", "email": "admin@busan-im.demo", "name": "해운대내과 관리자",
     "role": Role.INSTITUTION_ADMIN, "institution": "BUSAN-IM"},
    {"key": "admin_seoul", "email": "admin@seoul-derm.demo", "name": "맑은피부과 관리자",
     "role": Role.INSTITUTION_ADMIN, "institution": "SEOUL-DERM"},
]

INTERPRETERS: list[dict[str, Any]] = [
    {"key": "mn", "email": "batbayar@interpreters.demo", "name": "Batbayar Dorj",
     "languages": ["mn", "ko", "ru"], "zone": "Asia/Ulaanbaatar"},
    {"key": "ja", "email": "tanaka@interpreters.demo", "name": "田中 結衣 Tanaka Yui",
     "languages": ["ja", "ko"], "zone": "Asia/Tokyo"},
    {"key": "zh", "email": "wang@interpreters.demo", "name": "王芳 Wang Fang",
     "languages": ["zh-Hans", "zh-Hant", "ko"], "zone": "Asia/Seoul"},
    {"key": "vi", "email": "lan@interpreters.demo", "name": "Nguyễn Thị Lan",
     "languages": ["vi", "ko"], "zone": "Asia/Ho_Chi_Minh"},
    {"key": "ru", "email": "olga@interpreters.demo", "name": "Ольга Иванова Olga Ivanova",
     "languages": ["ru", "ko", "kk"], "zone": "Asia/Seoul"},
    {"key": "th", "email": "somsri@interpreters.demo", "name": "สมศรี Somsri K.",
     "languages": ["th", "ko", "en"], "zone": "Asia/Bangkok"},
]


def _patient(key: str, institution: str, mrn: str, native: tuple[str, str],
             latin: tuple[str, str], birth: str, sex: str, nationality: str, residence: str,
             current: str, languages: list[str], zone: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "institution": institution, "mrn": mrn,
            "family_name_native": native[0], "given_name_native": native[1],
            "family_name_latin": latin[0], "given_name_latin": latin[1],
            "birth_date": date.fromisoformat(birth), "sex": sex, "nationality": nationality,
            "residence_country": residence, "current_country": current,
            "languages": languages, "preferred_language": languages[0], "time_zone": zone,
            **extra}


PATIENTS: list[dict[str, Any]] = [
    # Busan internal medicine: domestic chronic care.
    _patient("kim_youngsu", "BUSAN-IM", "BIM-20431", ("김", "영수"), ("Kim", "Young-su"),
             "1953-04-12", "male", "KR", "KR", "KR", ["ko"], "Asia/Seoul",
             residence_region="KR-26", residence_district="해운대구", nhi_covered=True,
             flags=["long_term_care"], long_term_care_grade=4, phone="+821055510431",
             account=True),
    _patient("lee_junghee", "BUSAN-IM", "BIM-18872", ("이", "정희"), ("Lee", "Jung-hee"),
             "1966-09-30", "female", "KR", "KR", "KR", ["ko"], "Asia/Seoul",
             residence_region="KR-26", residence_district="수영구", nhi_covered=True,
             account=True),
    _patient("park_sangchul", "BUSAN-IM", "BIM-21907", ("박", "상철"), ("Park", "Sang-chul"),
             "1948-01-22", "male", "KR", "KR", "KR", ["ko"], "Asia/Seoul",
             residence_region="KR-47", residence_district="울릉군", nhi_covered=True,
             flags=["island_remote", "emergency_shortage_area"]),
    # Seoul dermatology: aesthetic and procedure follow-ups from abroad.
    _patient("sato_haruka", "SEOUL-DERM", "SCD-7781", ("佐藤", "春香"), ("Sato", "Haruka"),
             "1992-06-03", "female", "JP", "JP", "JP", ["ja", "en"], "Asia/Tokyo",
             email="haruka.sato@example.jp", account=True),
    _patient("chen_mei", "SEOUL-DERM", "SCD-7802", ("陈", "美"), ("Chen", "Mei"),
             "1995-11-18", "female", "CN", "CN", "CN", ["zh-Hans"], "Asia/Shanghai",
             email="chen.mei@example.cn"),
    _patient("emily_carter", "SEOUL-DERM", "SCD-7845", ("Carter", "Emily"), ("Carter", "Emily"),
             "1988-02-14", "female", "US", "US", "US", ["en"], "America/New_York",
             email="emily.carter@example.com", account=True),
    _patient("jung_minseo", "SEOUL-DERM", "SCD-6120", ("정", "민서"), ("Jung", "Min-seo"),
             "2001-08-09", "female", "KR", "KR", "KR", ["ko"], "Asia/Seoul",
             residence_region="KR-41", nhi_covered=True),
    # Hangang University Hospital international centre: post-operative and oncology care.
    _patient("john_miller", "HANGANG-UH", "HUH-300122", ("Miller", "John"), ("Miller", "John"),
             "1961-03-27", "male", "US", "US", "US", ["en"], "America/Los_Angeles",
             email="john.miller@example.com", account=True),
    _patient("lin_weiting", "HANGANG-UH", "HUH-300188", ("林", "瑋婷"), ("Lin", "Wei-ting"),
             "1974-12-05", "female", "TW", "TW", "TW", ["zh-Hant", "en"], "Asia/Taipei",
             email="weiting.lin@example.tw", account=True),
    _patient("somchai", "HANGANG-UH", "HUH-300203", ("ประเสริฐ", "สมชาย"),
             ("Prasert", "Somchai"), "1969-07-19", "male", "TH", "TH", "TH", ["th"],
             "Asia/Bangkok", email="somchai.p@example.th"),
    _patient("bat_erdene", "HANGANG-UH", "HUH-300219", ("Ганболд", "Бат-Эрдэнэ"),
             ("Ganbold", "Bat-Erdene"), "1958-05-02", "male", "MN", "MN", "MN", ["mn", "ru"],
             "Asia/Ulaanbaatar", email="baterdene.g@example.mn", account=True),
    _patient("nguyen_van_an", "HANGANG-UH", "HUH-300233", ("Nguyễn", "Văn An"),
             ("Nguyen", "Van An"), "1972-10-10", "male", "VN", "VN", "VN", ["vi"],
             "Asia/Ho_Chi_Minh", email="an.nguyen@example.vn"),
    _patient("ivan_petrov", "HANGANG-UH", "HUH-300251", ("Петров", "Иван"), ("Petrov", "Ivan"),
             "1965-01-30", "male", "RU", "RU", "RU", ["ru"], "Asia/Vladivostok",
             email="ivan.petrov@example.ru"),
    _patient("choi_jiwoo", "HANGANG-UH", "HUH-210877", ("최", "지우"), ("Choi", "Ji-woo"),
             "1999-04-21", "female", "KR", "KR", "KR", ["ko", "en"], "Asia/Seoul",
             residence_region="KR-11", nhi_covered=True, flags=["type1_diabetes"],
             email="jiwoo.choi@example.kr", account=True),
]

#: (patient key, practitioner key, days ago, mode, kind, conditions, summary)
ENCOUNTERS: list[tuple[str, str, int, str, str, list[str], str]] = [
    ("kim_youngsu", "dr_park", 40, "in_person", "visit", ["I10"],
     "Hypertension review; amlodipine 5 mg continued. Home BP monitoring started."),
    ("kim_youngsu", "dr_park", 400, "in_person", "visit", ["I10"], "Hypertension diagnosed."),
    ("lee_junghee", "dr_park", 220, "in_person", "visit", ["E11.9"],
     "Type 2 diabetes; metformin. Last in-person visit more than 6 months ago."),
    ("park_sangchul", "dr_park", 95, "in_person", "visit", ["I10", "E78.5"],
     "Hypertension and dyslipidaemia; travels from Ulleung-do every few months."),
    ("sato_haruka", "dr_kim", 12, "in_person", "procedure", ["L81.4"],
     "Picosecond laser for melasma, session 2 of 4."),
    ("chen_mei", "dr_kim", 45, "in_person", "procedure", ["L90.5"],
     "Fractional CO2 laser for acne scars."),
    ("emily_carter", "dr_kim", 9, "in_person", "procedure", ["L57.0"],
     "Excision of actinic keratosis, left cheek; sutures removed day 7."),
    ("jung_minseo", "dr_kim", 20, "in_person", "visit", ["L70.0"], "Acne; topical therapy."),
    ("john_miller", "dr_lee", 17, "in_person", "surgery", ["C73"],
     "Total thyroidectomy for papillary carcinoma; discharged day 3."),
    ("lin_weiting", "dr_choi", 24, "in_person", "procedure", ["C50.9"],
     "Adjuvant chemotherapy cycle 4 of 6 completed."),
    ("somchai", "dr_lee", 52, "in_person", "surgery", ["M48.06"],
     "Lumbar decompression and fusion L4-5."),
    ("bat_erdene", "dr_lee", 14, "in_person", "surgery", ["I25.1"],
     "Coronary artery bypass graft x3; discharged day 9."),
    ("nguyen_van_an", "dr_lee", 28, "in_person", "surgery", ["C22.0"],
     "Right hepatectomy for hepatocellular carcinoma."),
    ("ivan_petrov", "dr_choi", 75, "in_person", "surgery", ["C16.9"],
     "Subtotal gastrectomy for gastric cancer; oncology follow-up planned."),
    ("choi_jiwoo", "dr_choi", 150, "in_person", "visit", ["E10.9"],
     "Type 1 diabetes; CGM and insulin pump review."),
]

#: patient key -> (name, clinic, country, email, languages)
LOCAL_PHYSICIANS: dict[str, tuple[str, str, str, str, list[str]]] = {
    "sato_haruka": ("山本 健 Dr. Ken Yamamoto", "Yamamoto Skin Clinic, Osaka", "JP",
                    "yamamoto@clinic.example.jp", ["ja"]),
    "emily_carter": ("Dr. Sarah Goldberg", "Midtown Dermatology, New York", "US",
                     "s.goldberg@midtownderm.example.com", ["en"]),
    "john_miller": ("Dr. Michael Torres", "Bay Area Endocrine Associates", "US",
                    "mtorres@bayendo.example.com", ["en"]),
    "lin_weiting": ("陳志明 Dr. Chen Chih-ming", "Taipei Oncology Centre", "TW",
                    "chen.cm@tpe-onc.example.tw", ["zh-Hant", "en"]),
    "somchai": ("Dr. Anan Suksawat", "Bangkok Spine Hospital", "TH",
                "anan@bkkspine.example.th", ["th", "en"]),
    "bat_erdene": ("Д. Энхболд Dr. Enkhbold D.", "Ulaanbaatar Cardiology Centre", "MN",
                   "enkhbold@ubcardio.example.mn", ["mn", "ru"]),
    "nguyen_van_an": ("Dr. Tran Quoc Bao", "Cho Ray Hospital, Ho Chi Minh City", "VN",
                      "bao.tq@choray.example.vn", ["vi", "en"]),
    "ivan_petrov": ("Dr. Elena Smirnova", "Vladivostok Regional Oncology", "RU",
                    "smirnova@vlad-onc.example.ru", ["ru"]),
    "chen_mei": ("Dr. Zhang Wei", "Shanghai Huashan Dermatology", "CN",
                 "zhang.wei@huashan.example.cn", ["zh-Hans"]),
}


def _already_loaded(db: Session) -> bool:
    return db.execute(select(Institution.id).where(Institution.code == "SEOUL-DERM")).first() \
        is not None


def _staff_user(db: Session, demo: DemoContext, spec: dict[str, Any]) -> User:
    institution = demo.institutions[spec["institution"]]
    user = create_user(db, email=spec["email"], password=DEMO_PASSWORD,
                       display_name=spec["name"], language="ko",
                       memberships=[(institution.id, spec["role"])])
    if user.needs_two_factor:
        user.totp_secret, user.totp_enabled = DEMO_TOTP_SECRET, True
    demo.users[spec["key"]] = user
    note = "two-factor (demo key below)" if user.needs_two_factor else ""
    demo.logins.append((spec["role"].value, spec["email"], f"{institution.code} {note}".strip()))
    return user


def _load_core(db: Session, demo: DemoContext) -> None:
    for spec in INSTITUTIONS:
        institution = Institution(**spec)
        db.add(institution)
        demo.institutions[spec["code"]] = institution
    db.flush()
    for spec in STAFF:
        user = _staff_user(db, demo, spec)
        if spec["role"] == Role.CLINICIAN:
            practitioner = Practitioner(
                user_id=user.id, licence_number=spec["licence"], profession="physician",
                specialty=spec["specialty"], name_native=spec["native"],
                name_latin=spec["latin"], languages=spec["languages"])
            practitioner.roles.append(PractitionerRole(
                institution_id=demo.institutions[spec["institution"]].id))
            db.add(practitioner)
            demo.practitioners[spec["key"]] = practitioner
    hangang = demo.institutions["HANGANG-UH"]
    for spec in INTERPRETERS:
        user = create_user(db, email=spec["email"], password=DEMO_PASSWORD,
                           display_name=spec["name"], language="ko", time_zone=spec["zone"],
                           memberships=[(hangang.id, Role.INTERPRETER)])
        interpreter = Interpreter(institution_id=hangang.id, user_id=user.id, name=spec["name"],
                                  languages=spec["languages"], time_zone=spec["zone"])
        db.add(interpreter)
        demo.interpreters[spec["key"]] = interpreter
        demo.logins.append(("interpreter", spec["email"], "+".join(spec["languages"])))
    auditor = create_user(
        db, email="evaluator@pilot-evaluation.demo", password=DEMO_PASSWORD,
        display_name="시범사업 평가단 Pilot evaluator", language="ko",
        memberships=[(i.id, Role.AUDITOR) for i in demo.institutions.values()])
    demo.users["auditor"] = auditor
    demo.logins.append(("auditor", auditor.email, "all three institutions"))
    db.flush()

    for spec in PATIENTS:
        values = {k: v for k, v in spec.items() if k not in {"key", "institution", "account"}}
        patient = Patient(institution_id=demo.institutions[spec["institution"]].id,
                          photo_on_file=True, **values)
        db.add(patient)
        db.flush()
        demo.patients[spec["key"]] = patient
        if spec.get("account"):
            email = spec.get("email") or f"{spec['key']}@patients.demo"
            user = create_user(db, email=email, password=DEMO_PASSWORD,
                               display_name=patient.display_name,
                               language=patient.preferred_language, time_zone=patient.time_zone,
                               memberships=[(patient.institution_id, Role.PATIENT)])
            patient.user_id = user.id
            demo.users[spec["key"]] = user
            demo.logins.append(("patient", email, f"{spec['institution']} {spec['mrn']} "
                                f"({patient.preferred_language}, {patient.time_zone})"))

    now = utcnow()
    for patient_key, practitioner_key, days_ago, mode, kind, conditions, summary in ENCOUNTERS:
        patient = demo.patients[patient_key]
        started = (now - timedelta(days=days_ago)).replace(hour=1, minute=30, second=0,
                                                           microsecond=0)
        db.add(Encounter(institution_id=patient.institution_id, patient_id=patient.id,
                         practitioner_id=demo.practitioners[practitioner_key].id, mode=mode,
                         kind=kind, started_at=started, ended_at=started + timedelta(minutes=30),
                         conditions=conditions, summary=summary,
                         external_id=f"DEMO-{patient_key}-{days_ago}"))
    for patient_key, (name, clinic, country, email, languages) in LOCAL_PHYSICIANS.items():
        patient = demo.patients[patient_key]
        db.add(LocalPhysician(institution_id=patient.institution_id, patient_id=patient.id,
                              name=name, clinic=clinic, country=country, email=email,
                              languages=languages))
    for patient in demo.patients.values():
        kinds = ["pipa_sensitive", "telemedicine_limits"]
        if patient.residence_country != "KR":
            kinds.append("cross_border_transfer")
        for kind in kinds:
            db.add(Consent(institution_id=patient.institution_id, patient_id=patient.id,
                           kind=kind, text_version="2026-01", language=patient.preferred_language,
                           granted_at=now - timedelta(days=30)))
    record(db, AuditActor.system("demo"), AuditEvent("create", "demo", None, purpose="operations",
                                                      detail={"patients": len(demo.patients)}))


def _run_extensions(db: Session, demo: DemoContext) -> None:
    for module_name in EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name == module_name:
                continue
            raise
        module.load_demo(db, demo)


def load_demo(engine: Engine) -> list[tuple[str, str, str]]:
    """Load the demo once; later calls only return the logins."""
    demo = DemoContext(today=utcnow().date())
    with session_scope(engine) as db:
        if _already_loaded(db):
            return _describe_existing(db)
        _load_core(db, demo)
        db.flush()
        _run_extensions(db, demo)
    return demo.logins


def _describe_existing(db: Session) -> list[tuple[str, str, str]]:
    rows = []
    for user in db.execute(select(User).order_by(User.id)).scalars():
        roles = ",".join(sorted(r.value for r in user.roles))
        rows.append((roles, user.email, ""))
    return rows


__all__ = ["DEMO_PASSWORD", "DEMO_TOTP_SECRET", "DemoContext", "load_demo"]
