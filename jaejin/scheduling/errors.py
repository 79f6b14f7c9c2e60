"""Scheduling errors with stable codes.

The code is the contract (API clients and tests match on it); the message is an English msgid,
translated at the edge with `SchedulingError.translated(lang)`.
"""

from __future__ import annotations

from enum import StrEnum

from jaejin.core.i18n import translate


class ErrorCode(StrEnum):
    UNKNOWN_TIME_ZONE = "UNKNOWN_TIME_ZONE"
    INVALID_RANGE = "INVALID_RANGE"
    RANGE_TOO_LONG = "RANGE_TOO_LONG"
    UNKNOWN_VISIT_TYPE = "UNKNOWN_VISIT_TYPE"
    MODE_NOT_OFFERED = "MODE_NOT_OFFERED"
    SLOT_NOT_ON_GRID = "SLOT_NOT_ON_GRID"
    SLOT_IN_PAST = "SLOT_IN_PAST"
    SLOT_TOO_SOON = "SLOT_TOO_SOON"
    OUTSIDE_AVAILABILITY = "OUTSIDE_AVAILABILITY"
    SLOT_TAKEN = "SLOT_TAKEN"
    INTERPRETER_LANGUAGE_UNAVAILABLE = "INTERPRETER_LANGUAGE_UNAVAILABLE"
    INTERPRETER_UNAVAILABLE = "INTERPRETER_UNAVAILABLE"
    INVALID_STATUS_TRANSITION = "INVALID_STATUS_TRANSITION"
    CANCELLATION_CUTOFF_PASSED = "CANCELLATION_CUTOFF_PASSED"
    APPOINTMENT_ALREADY_STARTED = "APPOINTMENT_ALREADY_STARTED"
    APPOINTMENT_NOT_STARTED = "APPOINTMENT_NOT_STARTED"


#: The HTTP status an API should answer with for each code. Conflicts with other people's
#: bookings are 409 (with the next free slots); everything the caller can fix is 422.
SUGGESTED_HTTP_STATUS: dict[ErrorCode, int] = {
    code: 422 for code in ErrorCode
} | {
    ErrorCode.SLOT_TAKEN: 409,
    ErrorCode.INTERPRETER_UNAVAILABLE: 409,
    ErrorCode.INVALID_STATUS_TRANSITION: 409,
    ErrorCode.CANCELLATION_CUTOFF_PASSED: 409,
    ErrorCode.APPOINTMENT_ALREADY_STARTED: 409,
    ErrorCode.APPOINTMENT_NOT_STARTED: 409,
}


class Message(str):
    """A parameter value that is itself a msgid (a mode, a status): translated with the error."""

    __slots__ = ()


class SchedulingError(ValueError):
    """A rule of scheduling was broken by the input; `code` says which."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        /,
        *,
        field: str | None = None,
        **params: object,
    ) -> None:
        self.code = code
        self.message = message
        self.field = field
        self.params = params
        super().__init__(f"{code}: {message.format(**params) if params else message}")

    @property
    def http_status(self) -> int:
        return SUGGESTED_HTTP_STATUS[self.code]

    def params_in(self, lang: str) -> dict[str, object]:
        """The parameters with any `Message` value (a mode, a status) translated into `lang`."""
        return {
            name: translate(lang, value) if isinstance(value, Message) else value
            for name, value in self.params.items()
        }

    def translated(self, lang: str) -> str:
        return translate(lang, self.message, **self.params_in(lang))

    def to_dict(self, lang: str) -> dict[str, object]:
        """The error as a JSON-ready body: stable code, message in `lang`, offending field."""
        body: dict[str, object] = {"code": str(self.code), "message": self.translated(lang)}
        if self.field is not None:
            body["field"] = self.field
        return body
