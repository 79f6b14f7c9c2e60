"""Background work run by `jaejin worker`: outbox handlers and scheduled checks.

Capabilities list their handler registration and periodic jobs here, so one worker runs them all.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from sqlalchemy import Engine

log = logging.getLogger(__name__)

#: Modules exposing `register_outbox_handlers()`.
HANDLER_MODULES: tuple[str, ...] = ("jaejin.notify", "jaejin.scheduling.notifications")
#: Modules exposing `run_scheduled(engine)`, called on every worker poll (they pace themselves).
SCHEDULED_MODULES: tuple[str, ...] = ("jaejin.monitoring.jobs",)


def _optional(module_name: str, attribute: str) -> Callable[..., object] | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        if missing.name == module_name:
            return None
        raise
    found: Callable[..., object] = getattr(module, attribute)
    return found


def load_handlers() -> None:
    for module_name in HANDLER_MODULES:
        register = _optional(module_name, "register_outbox_handlers")
        if register is not None:
            register()


def run_scheduled(engine: Engine) -> None:
    for module_name in SCHEDULED_MODULES:
        job = _optional(module_name, "run_scheduled")
        if job is None:
            continue
        try:
            job(engine)
        except Exception:
            log.exception("scheduled job %s failed", module_name)
