"""The route index picks exactly what FastAPI's matching over every route picks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRouter, _IncludedRouter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Match
from starlette.testclient import TestClient

from jaejin.core.routing import RouteIndex, _Index, _leaves, fixed_prefix

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _selected(routes: list[Any], scope: dict[str, Any]) -> tuple[Any, ...]:
    """What matching over `routes` decides: the first full match, else the first partial
    (405), with the endpoint (or mount) reached and its path parameters."""
    partial: tuple[Any, ...] | None = None
    for route in routes:
        if isinstance(route, _IncludedRouter):
            match, child, inner, context = route._match(scope)
            if isinstance(inner, _IncludedRouter):
                chosen = _selected(inner.effective_candidates(), scope)
                match, reached = chosen[0], chosen[1:]
            else:
                target = context.original_route if context is not None else inner
                reached = (id(target), child.get("path_params"))
        else:
            match, child = route.matches(scope)
            reached = (id(route), child.get("path_params"))
        if match == Match.FULL:
            return (Match.FULL, *reached)
        if match == Match.PARTIAL and partial is None:
            partial = (Match.PARTIAL, *reached)
    return partial or (Match.NONE,)


def _decisions(routes: list[Any], path: str, method: str) -> tuple[Any, ...]:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    alternative = path.rstrip("/") if path.endswith("/") else path + "/"
    redirect = None
    if path != "/":
        redirect = _selected(routes, scope | {"path": alternative})[0] != Match.NONE
    return _selected(routes, scope), redirect


def _assert_same(router: APIRouter, index: _Index, path: str, method: str) -> None:
    pruned = index.tree_for(path).routes
    assert _decisions(pruned, path, method) == _decisions(router.routes, path, method), (
        method, path)


def _sample_paths(router: APIRouter) -> list[str]:
    """Every route's path with sample parameters, and near misses around each."""
    paths = {"/", "", "//", "/api", "/api/", "/api/v1", "/api/v1/", "/no-such-thing",
             "/api/v1/no-such-thing", "/static", "/static/", "/static/web"}
    for leaf in _leaves(router.routes):
        template = str(getattr(leaf, "path", None) or getattr(leaf.starlette_route, "path", ""))
        for value in ("1", "abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "a/b"):
            path = re.sub(r"\{[^}]+\}", value, template) or "/"
            paths |= {path, path + "/", path.rstrip("/") or "/", path + "/x", path + "x",
                      path[:-1] or "/", path.replace("/api/v1", "/api/v2"),
                      "/" + path.strip("/").upper()}
        if "{" not in template and not template.endswith("/"):
            paths.add(template + "/static/file.css")
    return sorted(paths)


@pytest.fixture(scope="module")
def router(app: FastAPI) -> APIRouter:
    router: APIRouter = app.router
    return router


def test_every_route_and_near_miss_is_matched_as_without_the_index(router: APIRouter) -> None:
    index = _Index(router)
    paths = _sample_paths(router)
    assert len(paths) > 500
    for path in paths:
        for method in METHODS:
            _assert_same(router, index, path, method)


def test_every_route_is_indexed_by_its_path(router: APIRouter) -> None:
    # The index prunes by fixed prefixes: every route the application has must have one.
    leaves = _leaves(router.routes)
    assert len(leaves) > 100
    assert all(fixed_prefix(leaf) is not None for leaf in leaves)


def _known_segments(router: APIRouter) -> list[str]:
    segments = {"", "x", "1", "API", "healthz2", "loginx"}
    for leaf in _leaves(router.routes):
        prefix = fixed_prefix(leaf)
        if prefix:
            segments.update(prefix[0].split("/"))
    return sorted(segments)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_paths_are_matched_as_without_the_index(router: APIRouter,
                                                          data: st.DataObject) -> None:
    segment = st.one_of(st.sampled_from(_known_segments(router)),
                        st.text(alphabet="abcdefgh-_.0123456789", max_size=6))
    parts = data.draw(st.lists(segment, min_size=0, max_size=7))
    path = "/" + "/".join(parts)
    method = data.draw(st.sampled_from(METHODS))
    _assert_same(router, _Index(router), path, method)


def test_the_application_matches_through_the_index(app: FastAPI) -> None:
    assert isinstance(app.router.middleware_stack, RouteIndex)


def _answer(client: TestClient, method: str, path: str) -> tuple[Any, ...]:
    response = client.request(method, path, follow_redirects=False)
    # Error answers compared whole; successful ones (a server time, a CSRF token) by status.
    html = "html" in response.headers.get("content-type", "")
    body = response.content if response.status_code >= 300 and not html else b""
    return (response.status_code, response.headers.get("location"),
            response.headers.get("allow"), response.headers.get("content-type"), body)


def test_answers_are_those_of_the_whole_route_list(app: FastAPI, client: TestClient) -> None:
    """Through the whole application (error handlers, 404/405 shapes, redirects, static
    files), unauthenticated, with and without the index."""
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    paths = [path for path in _sample_paths(app.router) if "a/b" not in path][::7]
    paths += ["/healthz", "/healthz/", "/api/v1/status.json", "/api/v1/openapi.json",
              "/api/v1/no-such-thing?lang=ko", "/static/web/no-such-file.css"]
    try:
        for path in paths:
            for method in ("GET", "POST", "DELETE"):
                indexed = _answer(client, method, path)
                app.router.middleware_stack = index.whole_tree  # type: ignore[assignment]
                try:
                    assert _answer(client, method, path) == indexed, (method, path)
                finally:
                    app.router.middleware_stack = index
    finally:
        app.router.middleware_stack = index
