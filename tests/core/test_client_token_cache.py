"""A system client's cached principal, as each request sees it."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI, Request

from jaejin.core.accounts import Role
from jaejin.core.authn import ClientTokenCache, Principal

CLIENT = Principal(kind="client", subject_id=7, label="client:lab", language="en",
                   time_zone="UTC", memberships=frozenset({(1, Role.SYSTEM_CLIENT)}),
                   scopes=frozenset({"policy.evaluate"}))


def request(app: FastAPI, *, language: str | None = None, agent: str | None = None,
            address: str = "10.0.0.1") -> Request:
    headers = [(b"authorization", b"Bearer t")]
    if language is not None:
        headers.append((b"accept-language", language.encode()))
    if agent is not None:
        headers.append((b"user-agent", agent.encode()))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "client": (address, 50000), "app": app, "query_string": b""})


@pytest.fixture
def cache() -> ClientTokenCache:
    cache = ClientTokenCache(ttl=60)
    cache.keep("t", CLIENT, time.time() + 3600)
    return cache


def test_requests_that_look_alike_get_the_same_principal(app: FastAPI,
                                                         cache: ClientTokenCache) -> None:
    first = cache.for_request("t", request(app, language="ko", agent="lab/1"))
    again = cache.for_request("t", request(app, language="ko", agent="lab/1"))
    assert first is again
    assert first is not None
    assert (first.language, first.user_agent, first.ip_address) == ("ko", "lab/1", "10.0.0.1")
    assert (first.subject_id, first.scopes) == (CLIENT.subject_id, CLIENT.scopes)


def test_each_request_is_answered_in_its_own_language_address_and_agent(
        app: FastAPI, cache: ClientTokenCache) -> None:
    korean = cache.for_request("t", request(app, language="ko"))
    japanese = cache.for_request("t", request(app, language="ja;q=0.9, xx"))
    unnamed = cache.for_request("t", request(app))
    elsewhere = cache.for_request("t", request(app, language="ko", address="10.0.0.2"))
    agent = cache.for_request("t", request(app, language="ko", agent="gateway/2"))
    assert korean is not None and japanese is not None and unnamed is not None
    assert elsewhere is not None and agent is not None
    assert (korean.language, japanese.language, unnamed.language) == ("ko", "ja", "en")
    assert (elsewhere.language, elsewhere.ip_address) == ("ko", "10.0.0.2")
    assert (agent.user_agent, korean.user_agent) == ("gateway/2", None)


def test_many_different_looks_are_still_answered_each_its_own_way(
        app: FastAPI, cache: ClientTokenCache) -> None:
    for number in range(ClientTokenCache.MAX_LOOKS * 3):
        seen = cache.for_request("t", request(app, agent=f"device/{number}"))
        assert seen is not None and seen.user_agent == f"device/{number}"


def test_an_expired_or_unknown_token_is_not_answered(app: FastAPI, cache: ClientTokenCache,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.for_request("other", request(app)) is None
    assert cache.for_request("t", request(app)) is not None
    now = time.time()
    monkeypatch.setattr("jaejin.core.authn.time.time", lambda: now + 61)
    assert cache.for_request("t", request(app)) is None
    assert cache.get("t") is None
