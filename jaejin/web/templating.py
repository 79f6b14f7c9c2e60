"""Server-rendered pages: one Jinja2 environment over every capability's `templates/` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from jaejin.core.authn import Principal
from jaejin.core.errors import request_language
from jaejin.core.i18n import (
    LANGUAGE_NAMES,
    RIGHT_TO_LEFT,
    SUPPORTED_LANGUAGES,
    get_translator,
    translate,
)
from jaejin.web.navigation import links_for

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _build_environment() -> Environment:
    folders = sorted(str(path) for path in PACKAGE_ROOT.glob("*/templates") if path.is_dir())
    environment = Environment(
        loader=ChoiceLoader([FileSystemLoader(folder) for folder in folders]),
        autoescape=select_autoescape(["html", "xml", "svg"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.policies["ext.i18n.trimmed"] = True
    return environment


environment = _build_environment()


def page_context(request: Request, principal: Principal | None) -> dict[str, Any]:
    language = request_language(request)
    translator = get_translator(language)

    def gettext(message: str, **params: Any) -> str:
        text = translator.gettext(message)
        return text % params if params else text

    def ngettext(singular: str, plural: str, count: int, **params: Any) -> str:
        text = translator.ngettext(singular, plural, count)
        return text % {"num": count, **params}

    def t(message: str, **params: Any) -> str:
        return translate(language, message, **params)

    return {
        "request": request,
        "principal": principal,
        "lang": language,
        "text_direction": "rtl" if language in RIGHT_TO_LEFT else "ltr",
        "languages": [(code, LANGUAGE_NAMES[code]) for code in SUPPORTED_LANGUAGES],
        "csrf_token": principal.csrf_token if principal else request.cookies.get("jaejin_csrf"),
        "nav_links": links_for(principal.roles) if principal else [],
        "gettext": gettext,
        "ngettext": ngettext,
        "_": gettext,
        "t": t,
    }


def render(request: Request, template: str, principal: Principal | None = None,
           status_code: int = 200, **context: Any) -> HTMLResponse:
    merged = page_context(request, principal)
    merged.update(context)
    html = environment.get_template(template).render(merged)
    return HTMLResponse(html, status_code=status_code)
