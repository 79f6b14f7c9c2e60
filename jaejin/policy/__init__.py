"""Telemedicine policy: versioned rule packs as data, and an engine that explains each decision.

    from jaejin.policy import default_registry, evaluate, parse_request
    decision = evaluate(parse_request(payload), default_registry())
    decision.model_dump(mode="json")   # the API response body
"""

from jaejin.policy.decision import Decision
from jaejin.policy.emergency import (
    CountryProfile,
    EmergencyNumbers,
    country_profile,
    emergency_numbers,
    service_label,
)
from jaejin.policy.engine import evaluate, evaluate_json
from jaejin.policy.errors import PackError, RequestError
from jaejin.policy.packs import PackRegistry, default_registry, load_packs
from jaejin.policy.request import EvaluationRequest, describe_validation_error, parse_request
from jaejin.policy.vocabulary import Code, DecisionKind

__all__ = [
    "Code",
    "CountryProfile",
    "Decision",
    "DecisionKind",
    "EmergencyNumbers",
    "EvaluationRequest",
    "PackError",
    "PackRegistry",
    "RequestError",
    "country_profile",
    "default_registry",
    "describe_validation_error",
    "emergency_numbers",
    "evaluate",
    "evaluate_json",
    "load_packs",
    "parse_request",
    "service_label",
]
