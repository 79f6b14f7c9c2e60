"""Errors the policy capability raises: bad rule packs and requests the rules cannot judge."""

from __future__ import annotations


class PackError(Exception):
    """A policy pack or data list is malformed; raised at load so the service refuses to start."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        location = f"{file}: {field}" if field else file
        super().__init__(f"{location}: {problem}")


class RequestError(ValueError):
    """A well-formed request that contradicts the reference data: bad input, not a denial."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
