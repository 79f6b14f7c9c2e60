"""The readings POST through `core.lean`'s lane answers exactly as through the FastAPI stack."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jaejin.monitoring.api import GROUP_COMMIT_MAX_BYTES
from tests.core.test_lean import Counted, _lane, _stack_of
from tests.monitoring.test_api import as_client, readings_url, single
from tests.support import problem


@pytest.fixture
def stack_only(app: FastAPI, client: TestClient) -> TestClient:
    """The same application without the lane: its answers are the reference."""
    return TestClient(_stack_of(app, _lane(app, client).stack), base_url="http://testserver",
                      raise_server_exceptions=False)


def _answer(response: Any) -> Any:
    """The answer without the moment it was received (the only part two calls differ in)."""
    body = orjson.loads(response.content)
    if isinstance(body, dict):
        body.pop("received_at", None)
    return body


def _headers(response: Any) -> dict[str, str]:
    """Its headers but the length (the keys and times of two answers may differ in length)."""
    return {name: value for name, value in response.headers.items()
            if name != "content-length"}


def _same(lean: Any, reference: Any) -> None:
    assert lean.status_code == reference.status_code, (lean.text, reference.text)
    assert _headers(lean) == _headers(reference)
    assert _answer(lean) == _answer(reference)


def test_the_readings_route_answers_through_the_lane_as_the_stack_does(
        app, client, stack_only, actors):
    gateway = {**as_client(client, actors), "Accept-Language": "ko"}
    reader = as_client(client, actors, scope="monitoring.read")
    lane = app.middleware_stack
    counted = lane.stack = Counted(lane)
    own, elsewhere = actors.patients["a"].id, actors.patients["b"].id
    one = {"readings": [single("lean-1", "heart_rate", 72, "bpm")]}
    large = {"readings": [single(f"lean-large-{index}", "heart_rate", 60 + index % 30, "bpm",
                                 minutes_ago=index + 2) for index in range(120)]}
    assert len(orjson.dumps(large)) > GROUP_COMMIT_MAX_BYTES  # written alone, not grouped
    critical = {"readings": [single("lean-critical", "spo2", 80, "%")]}

    served_by_lane = [
        (own, {"json": one, "headers": gateway}),
        (own, {"json": large, "headers": gateway}),
        (own, {"json": critical, "headers": gateway}),
        (elsewhere, {"json": one, "headers": gateway}),
        (own, {"content": b"{", "headers": gateway}),
        (own, {"json": {"not": "a batch"}, "headers": gateway}),
        (own, {"json": one, "headers": {"Accept-Language": "ko"}}),
        (own, {"json": one, "headers": reader}),
        (987654, {"json": one, "headers": gateway}),
    ]
    for patient_id, arguments in served_by_lane:
        # Stored once first, so that both ways answer the stored readings as duplicates.
        stack_only.post(readings_url(patient_id), **arguments)
        lean = client.post(readings_url(patient_id), **arguments)
        _same(lean, stack_only.post(readings_url(patient_id), **arguments))
    assert counted.calls == 0

    # New readings: the same answer but for their keys and ids.
    lean = client.post(readings_url(own), json={"readings": [single("lean-new", "spo2", 97,
                                                                    "%")]}, headers=gateway)
    reference = stack_only.post(readings_url(own), json={"readings": [
        single("stack-new", "spo2", 97, "%", minutes_ago=3)]}, headers=gateway)
    assert lean.status_code == reference.status_code == 200
    assert _answer(lean)["counts"] == _answer(reference)["counts"] == {
        **_answer(lean)["counts"], "created": 1}
    assert _headers(lean) == _headers(reference)
    assert counted.calls == 0

    left_to_the_stack = ["abc", "-1", "1.0", "\u0663", "9" * 30, f"{own}/"]
    for bad in left_to_the_stack:
        path = f"/api/v1/monitoring/patients/{bad}/readings"
        _same(client.post(path, json=one, headers=gateway, follow_redirects=False),
              stack_only.post(path, json=one, headers=gateway, follow_redirects=False))
    assert counted.calls == len(left_to_the_stack)


def test_a_body_past_the_applications_default_limit_is_answered_as_by_the_stack(
        app, client, stack_only, actors):
    # The patients' paths take uploads up to their own limit (`BODY_LIMIT_OVERRIDES`): the lane
    # applies the same limits as the stack, so this is the stack's answer (here: not JSON).
    limit = app.state.settings.max_request_body_bytes
    headers = {**as_client(client, actors), "Accept-Language": "ko",
               "Content-Type": "application/json"}
    path = readings_url(actors.patients["a"].id)
    body = b" " * (limit + 1)
    lean = client.post(path, content=body, headers=headers)
    assert lean.status_code == 400 and problem(lean)["code"] == "INVALID_JSON"
    _same(lean, stack_only.post(path, content=body, headers=headers))
