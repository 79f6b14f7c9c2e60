"""The application: every capability's routes, pages and static files behind one error shape."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from jaejin.core.config import Settings, get_settings
from jaejin.core.database import build_engine
from jaejin.core.errors import (
    BodySizeLimit,
    Problem,
    install_error_handlers,
    register_problem_renderer,
    request_language,
)
from jaejin.core.events import EventBus, attach_bus
from jaejin.core.i18n import translate
from jaejin.core.lean import LeanEndpoint, install_lean_lane
from jaejin.core.routing import install_route_index

log = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parent

#: Modules exposing `router`, in the order they are mounted. A capability adds itself here.
#: Where two paths overlap the first mounted wins; the order costs nothing else since the route
#: index (`jaejin.core.routing`) tries only the routes a path can reach.
ROUTER_MODULES: tuple[str, ...] = (
    # The policy API serves other systems at thousands of calls a second (its paths overlap
    # no other module's).
    "jaejin.policy.api",
    # Booking and slot search are the other high-rate API (no overlaps either).
    "jaejin.scheduling.api",
    "jaejin.accounts.oauth",
    "jaejin.accounts.pages",
    "jaejin.directory.api",
    "jaejin.directory.pages",
    "jaejin.monitoring.api",
    "jaejin.monitoring.photo_api",
    "jaejin.fhir.api",
    "jaejin.monitoring.pages",
    "jaejin.web.audit_pages",
    "jaejin.visits.pages",
    "jaejin.scheduling.pages",
)

API_PREFIXES = ("/api/", "/oauth2/", "/fhir/")


def _is_page_request(request: Request) -> bool:
    path: str = request.scope["path"]  # not request.url: every API refusal asks this first
    if path.startswith(API_PREFIXES) or path.startswith("/static/"):
        return False
    return "text/html" in request.headers.get("accept", "") or request.method == "GET"


async def _render_page_problem(request: Request, problem: Problem) -> Response:
    from jaejin.web.templating import render

    if problem.status == 401 and request.method == "GET":
        target = "/login/two-factor" if problem.code == "TWO_FACTOR_REQUIRED" else "/login"
        return RedirectResponse(f"{target}?next={request.url.path}", status_code=303)
    language = request_language(request)
    body = problem.body(language)
    principal = getattr(request.state, "principal", None)
    return render(request, "web/error.html", principal, status_code=problem.status,
                  title=translate(language, "Something needs your attention"),
                  detail=body["detail"], code=problem.code, errors=body.get("errors", []))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Jaejin API",
        version="0.1.0",
        summary="Telemedicine follow-up platform for Korean medical institutions.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = build_engine(settings.database_url)
    bus = EventBus(settings.redis_url)
    app.state.bus = bus
    attach_bus(bus)

    install_error_handlers(app)
    register_problem_renderer(_is_page_request, _render_page_problem)
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    from jaejin.monitoring.api import BODY_LIMIT_OVERRIDES
    from jaejin.monitoring.photo_api import BODY_LIMIT_OVERRIDES as PHOTO_BODY_LIMITS

    # Health-data exports (Apple Health) are far larger than any form or JSON call; wound
    # photos have their own limit.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes,
                       overrides=[*PHOTO_BODY_LIMITS.items(), *BODY_LIMIT_OVERRIDES.items()])

    for static_dir in sorted(PACKAGE_ROOT.glob("*/static")):
        app.mount(f"/static/{static_dir.parent.name}", StaticFiles(directory=static_dir),
                  name=f"static-{static_dir.parent.name}")
    lean_endpoints: list[LeanEndpoint] = []
    for module_name in ROUTER_MODULES:
        module = importlib.import_module(module_name)
        app.include_router(module.router)
        lean_endpoints.extend(getattr(module, "LEAN_ROUTES", ()))

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # Matching tries only the routes the path can reach (FastAPI tries all ~160 in order).
    install_route_index(app.router)
    # The measured hot routes skip the stack's per-request layers (`jaejin.core.lean`).
    install_lean_lane(app, lean_endpoints)
    return app
