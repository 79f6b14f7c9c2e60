"""Background work run by `jaejin worker`: outbox handlers, scheduled checks, the audit sealer.

Capabilities list their handler registration and periodic jobs here, so one worker runs them all.
The audit sealer has a thread of its own (`jaejin serve` starts one too): its interval bounds how
long a new audit entry stays unsealed, independent of the outbox poll.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

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


def _seal_every(engine: Engine, seconds: float, stop: threading.Event) -> None:
    from jaejin.core.audit import seal_pending

    while True:
        try:
            report = seal_pending(engine)
            if report.sealed:
                log.debug("audit sealer: %s", report)
        except Exception:
            # Entries stay safely unsealed; the next round seals them (verification reports
            # any left too long).
            log.exception("audit sealing failed")
        if stop.wait(seconds):
            return


@dataclass(frozen=True, slots=True)
class AuditSealer:
    """A sealer thread started by `start_audit_sealer`."""

    thread: threading.Thread
    stopping: threading.Event

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to end and wait for it; True once it has ended. A round under way is
        finished first, so whoever stops it (a test, then the next one) knows the thread sends
        nothing more on its engine afterwards."""
        self.stopping.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def start_audit_sealer(engine: Engine, seconds: float | None = None) -> AuditSealer:
    """Seal the audit trail every `seconds` (JAEJIN_AUDIT_SEAL_SECONDS) in a daemon thread, until
    stopped. Several sealers (workers, servers) take turns safely."""
    from jaejin.core.config import get_settings

    stopping = threading.Event()
    interval = seconds if seconds is not None else get_settings().audit_seal_seconds
    thread = threading.Thread(target=_seal_every, args=(engine, interval, stopping),
                              name="audit-sealer", daemon=True)
    thread.start()
    return AuditSealer(thread, stopping)
