"""Text messages through a pluggable transport; the default writes them to the log.

Korean SMS gateways differ per institution contract, so a deployment adds its transport to
`TRANSPORTS` and selects it with `JAEJIN_SMS_TRANSPORT`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

from jaejin.core.config import Settings

log = logging.getLogger("jaejin.sms")


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    to: str  # E.164
    text: str


class InvalidPhoneNumber(ValueError):
    pass


def normalise_phone_number(raw: str, default_region: str = "KR") -> str:
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number") from error
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def send_via_log(sms: OutgoingSms) -> None:
    log.info("SMS to %s: %s", sms.to, sms.text)


TRANSPORTS: dict[str, Callable[[OutgoingSms], None]] = {"log": send_via_log}


def send_sms(settings: Settings, sms: OutgoingSms) -> None:
    TRANSPORTS[settings.sms_transport](sms)
