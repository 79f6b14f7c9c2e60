"""The closed vocabularies of the policy engine: request enums and the stable reason codes.

Codes are part of the public contract (API clients, audit reports and tests match on them), so
they are only ever added, never renamed.
"""

from __future__ import annotations

from enum import StrEnum


class InstitutionKind(StrEnum):
    CLINIC = "clinic"
    HOSPITAL = "hospital"
    GENERAL_HOSPITAL = "general_hospital"
    TERTIARY_HOSPITAL = "tertiary_hospital"
    PUBLIC_HEALTH_CENTRE = "public_health_centre"


class PatientFlag(StrEnum):
    LONG_TERM_CARE = "long_term_care"
    ISLAND_REMOTE = "island_remote"
    REGISTERED_DISABILITY = "registered_disability"
    EMERGENCY_SHORTAGE_AREA = "emergency_shortage_area"
    RARE_DISEASE = "rare_disease"
    TYPE1_DIABETES = "type1_diabetes"
    INFECTIOUS_ISOLATION = "infectious_isolation"
    CORRECTIONAL_INMATE = "correctional_inmate"
    MOBILITY_IMPAIRED = "mobility_impaired"


class VisitMode(StrEnum):
    VIDEO = "video"
    PHONE = "phone"
    IN_PERSON = "in_person"


class HistoryKind(StrEnum):
    VISIT = "visit"
    SURGERY = "surgery"
    PROCEDURE = "procedure"


class DocumentKind(StrEnum):
    DIAGNOSIS_CERTIFICATE = "diagnosis_certificate"
    MEDICAL_OPINION = "medical_opinion"
    REFERRAL_LETTER = "referral_letter"
    PRESCRIPTION_RECOMMENDATION = "prescription_recommendation"
    MEDICAL_SUMMARY = "medical_summary"
    RECEIPT = "receipt"


class DecisionKind(StrEnum):
    ALLOWED = "allowed"
    CONDITIONAL = "conditional"
    DENIED = "denied"


class Effect(StrEnum):
    """What a reason does to the decision."""

    ALLOW = "allow"
    DENY = "deny"
    CONDITION = "condition"
    INFO = "info"


class Code(StrEnum):
    """Stable reason, condition, prescription and alternative codes."""

    # Reasons
    NO_POLICY_IN_FORCE = "NO_POLICY_IN_FORCE"
    IN_PERSON_NOT_RESTRICTED = "IN_PERSON_NOT_RESTRICTED"
    NOT_NHI_COVERED = "NOT_NHI_COVERED"
    INSTITUTION_KIND_NOT_ALLOWED = "INSTITUTION_KIND_NOT_ALLOWED"
    HOSPITAL_LEVEL_GROUP = "HOSPITAL_LEVEL_GROUP"
    SHARE_CAP_EXCEEDED = "SHARE_CAP_EXCEEDED"
    FOLLOW_UP_OK = "FOLLOW_UP_OK"
    FOLLOW_UP_EXPIRED = "FOLLOW_UP_EXPIRED"
    FOLLOW_UP_OTHER_CONDITION = "FOLLOW_UP_OTHER_CONDITION"
    FIRST_VISIT_ALLOWED = "FIRST_VISIT_ALLOWED"
    FIRST_VISIT_IN_REGION = "FIRST_VISIT_IN_REGION"
    FIRST_VISIT_EXCEPTION = "FIRST_VISIT_EXCEPTION"
    FIRST_VISIT_NOT_ALLOWED = "FIRST_VISIT_NOT_ALLOWED"
    FIRST_VISIT_OUTSIDE_REGION = "FIRST_VISIT_OUTSIDE_REGION"
    DRUG_DELIVERY_ALLOWED = "DRUG_DELIVERY_ALLOWED"
    DRUG_PHARMACY_PICKUP = "DRUG_PHARMACY_PICKUP"
    CROSS_BORDER_TRI_PARTY_OK = "CROSS_BORDER_TRI_PARTY_OK"
    CROSS_BORDER_DIRECT_OK = "CROSS_BORDER_DIRECT_OK"
    CROSS_BORDER_DIRECT_NOT_ALLOWED = "CROSS_BORDER_DIRECT_NOT_ALLOWED"
    CROSS_BORDER_NOT_ALLOWED = "CROSS_BORDER_NOT_ALLOWED"
    # Conditions (some also appear as reasons)
    SHARE_CAP_CHECK_REQUIRED = "SHARE_CAP_CHECK_REQUIRED"
    VIDEO_REQUIRED = "VIDEO_REQUIRED"
    CONSENT_REQUIRED = "CONSENT_REQUIRED"
    IDENTITY_CHECK_REQUIRED = "IDENTITY_CHECK_REQUIRED"
    CROSS_BORDER_TRI_PARTY_REQUIRED = "CROSS_BORDER_TRI_PARTY_REQUIRED"
    PRESCRIPTION_PROHIBITED = "PRESCRIPTION_PROHIBITED"
    DAYS_SUPPLY_LIMIT = "DAYS_SUPPLY_LIMIT"
    MINOR_NO_PRESCRIPTION = "MINOR_NO_PRESCRIPTION"
    CERTIFICATE_NOT_ALLOWED = "CERTIFICATE_NOT_ALLOWED"
    # Per-item verdicts
    PRESCRIPTION_OK = "PRESCRIPTION_OK"
    PRESCRIPTION_RECOMMENDATION_ONLY = "PRESCRIPTION_RECOMMENDATION_ONLY"
    NOT_RESTRICTED_IN_PERSON = "NOT_RESTRICTED_IN_PERSON"
    DOCUMENT_OK = "DOCUMENT_OK"
    # Alternatives offered when telemedicine is denied or restricted
    IN_PERSON_VISIT = "IN_PERSON_VISIT"
    TRI_PARTY_CONSULTATION = "TRI_PARTY_CONSULTATION"
    CLINIC_TELEMEDICINE = "CLINIC_TELEMEDICINE"
    REGIONAL_TELEMEDICINE = "REGIONAL_TELEMEDICINE"
