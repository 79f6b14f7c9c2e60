"""Route lookup by path: an HTTP request is matched only against the routes that could match it.

FastAPI tries every route of the application in mount order, each through a few layers of
Python (about 3.5 us a route): with some 160 routes, `GET /healthz` (mounted last) spent about
0.5 ms finding itself, and a monitoring route twice as much as the same work mounted first.

`RouteIndex` sits where the application's router starts matching (`Router.middleware_stack`,
inside every middleware and error handler). From the request's first path segments it picks a
pruned copy of the route tree: the same route objects in the same order, minus those whose
fixed path prefix cannot fit the path (nor the path with its trailing slash added or removed,
for `redirect_slashes`). FastAPI's own matching then runs on that copy, so whatever it decides
(405 with Allow, path parameters, mounts, redirects, the 404) is what it would decide on the
whole tree: a route left out could only have answered "no match". Copies are kept per
combination of known leading segments; segments no route names are treated alike, so ids in
paths do not multiply them. Websockets and lifespan go through the whole tree as before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Final

from fastapi.routing import APIRoute, APIRouter, _EffectiveRouteContext, _IncludedRouter
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

#: Leading path segments that choose the pruned tree (`/api/v1/monitoring/patients/...`).
INDEXED_SEGMENTS: Final = 4
#: Pruned trees kept; a flood of odd paths rebuilds them rather than growing without bound.
MAX_TREES: Final = 512
#: Paths remembered with their tree (a dictionary look-up instead of splitting the path).
MAX_PATHS: Final = 4096

_UNKNOWN: Final = "\0"  # a segment no route spells out at that position

Key = tuple[tuple[str, ...], bool]


def fixed_prefix(route: Any) -> tuple[str, bool] | None:
    """The path every match starts with (up to the first parameter) and whether it is the
    whole path (a route without parameters matches only itself); None when unknown."""
    if isinstance(route, _EffectiveRouteContext):
        if isinstance(route.original_route, APIRoute):
            return route.path.split("{", 1)[0], "{" not in route.path
        route = route.starlette_route
    if isinstance(route, Mount):
        return route.path.split("{", 1)[0] + ("/" if "{" not in route.path else ""), False
    if isinstance(route, (Route, WebSocketRoute)):
        return route.path.split("{", 1)[0], "{" not in route.path
    return None


def _leaves(routes: Sequence[Any], routers: list[APIRouter] | None = None) -> list[Any]:
    """Every route of the tree, in order (and every included router into `routers`)."""
    found: list[Any] = []
    for route in routes:
        if isinstance(route, _IncludedRouter):
            if routers is not None:
                routers.append(route.original_router)
            found.extend(_leaves(route.effective_candidates(), routers))
        else:
            found.append(route)
    return found


def _stamp(routers: Sequence[APIRouter]) -> list[int]:
    """Changes whenever a route is added anywhere in the tree (`mount` bumps no version)."""
    return [len(router.routes) + (router._routes_version << 20) for router in routers]


class _Index:
    """The route tree of one version of the router, and its pruned copies by key."""

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.routers: list[APIRouter] = [router]
        self.prefixes: dict[int, tuple[str, bool] | None] = {}
        #: The segments routes spell out at each position (whole, or up to a parameter).
        self.known: list[set[str]] = [set() for _ in range(INDEXED_SEGMENTS)]
        for leaf in _leaves(router.routes, self.routers):
            prefix = fixed_prefix(leaf)
            self.prefixes[id(leaf)] = prefix
            if prefix is None:
                continue
            for position, segment in enumerate(prefix[0].split("/")[1:][:INDEXED_SEGMENTS]):
                self.known[position].add(segment)
        self.stamp = _stamp(self.routers)
        self.trees: dict[tuple[Key, Key | None], APIRouter] = {}
        self.paths: dict[str, APIRouter] = {}

    def key(self, path: str) -> Key:
        segments = path.split("/")[1:]
        leading = tuple(
            segment if segment in self.known[position] else _UNKNOWN
            for position, segment in enumerate(segments[:INDEXED_SEGMENTS])
        )
        return leading, len(segments) > INDEXED_SEGMENTS

    def tree_for(self, route_path: str) -> APIRouter:
        tree = self.paths.get(route_path)
        if tree is None:
            if len(self.paths) >= MAX_PATHS:
                self.paths.clear()
            tree = self.paths[route_path] = self._tree_for(route_path)
        return tree

    def _tree_for(self, route_path: str) -> APIRouter:
        alternative = None
        if route_path != "/":
            alternative = self.key(route_path.rstrip("/") if route_path.endswith("/")
                                   else route_path + "/")
        key = (self.key(route_path), alternative)
        tree = self.trees.get(key)
        if tree is None:
            if len(self.trees) >= MAX_TREES:
                self.trees.clear()
            keys = [key[0]] if alternative is None else [key[0], alternative]
            tree = copy.copy(self.router)
            tree.routes = self._pruned(self.router.routes, keys)
            self.trees[key] = tree
        return tree

    def _pruned(self, routes: Sequence[Any], keys: list[Key]) -> list[Any]:
        kept: list[Any] = []
        for route in routes:
            if isinstance(route, _IncludedRouter):
                candidates = self._pruned(route.effective_candidates(), keys)
                if candidates:
                    branch = copy.copy(route)
                    # Only this copy's matching sees the shorter list; the router itself,
                    # its OpenAPI and url_path_for still see every route.
                    branch.effective_candidates = (  # type: ignore[method-assign]
                        _returning(candidates))
                    kept.append(branch)
            elif any(_may_match(self.prefixes.get(id(route)), key) for key in keys):
                kept.append(route)
        return kept


def _returning(candidates: list[Any]) -> Callable[[], list[Any]]:
    return lambda: candidates


def _may_match(prefix: tuple[str, bool] | None, key: Key) -> bool:
    """False only when no path with these leading segments can start with `prefix` (or be
    it, when it is the whole path)."""
    if prefix is None:
        return True
    leading, longer = key
    segments = prefix[0].split("/")[1:]
    if prefix[1]:
        if len(segments) > INDEXED_SEGMENTS:
            return longer and leading == tuple(segments[:INDEXED_SEGMENTS])
        return not longer and leading == tuple(segments)
    *whole, partial = segments
    for position, segment in enumerate(whole):
        if position >= len(leading):
            return longer
        # An unknown segment is not this one: every segment of a prefix is known.
        if leading[position] != segment:
            return False
    position = len(whole)
    if position >= len(leading):
        return longer
    return leading[position] == _UNKNOWN or leading[position].startswith(partial)


class RouteIndex:
    """ASGI: the router's matching, over the routes that the request's path could reach."""

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.whole_tree: ASGIApp = router.middleware_stack
        self._index: _Index | None = None

    def _current(self) -> _Index | None:
        router = self.router
        index = self._index
        if index is None or index.stamp != _stamp(index.routers):
            if any(True for _route in router._iter_low_priority_routes()):
                return None  # frontend fallbacks see every route: not indexed
            index = self._index = _Index(router)
        return index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        index = self._current() if scope["type"] == "http" else None
        if index is None:
            await self.whole_tree(scope, receive, send)
            return
        scope.setdefault("router", self.router)  # url_for sees every route
        await index.tree_for(get_route_path(scope)).app(scope, receive, send)


def install_route_index(router: APIRouter) -> None:
    """Match the router's HTTP requests through a `RouteIndex` (once; a router with its own
    middleware is left as it is)."""
    if isinstance(router.middleware_stack, RouteIndex):
        return
    if router.middleware_stack != router.app:
        return
    router.middleware_stack = RouteIndex(router)


def indexed_routes(router: APIRouter, path: str) -> list[BaseRoute]:
    """The routes a request for `path` is matched against (for tests)."""
    index = _Index(router)
    return index.tree_for(path).routes
