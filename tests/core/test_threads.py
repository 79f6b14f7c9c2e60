"""run_blocking: a call in a worker thread, in a copy of the caller's context, at most
MAX_THREADS at once."""

from __future__ import annotations

import asyncio
import threading
import time
from contextvars import ContextVar

import pytest

from jaejin.core.threads import MAX_THREADS, THREAD_NAME_PREFIX, run_blocking

request_label: ContextVar[str] = ContextVar("request_label", default="none")


def test_the_call_runs_in_a_worker_thread_and_its_result_comes_back() -> None:
    def where(number: int) -> tuple[str, int]:
        return threading.current_thread().name, number * 2

    name, doubled = asyncio.run(run_blocking(where, 21))
    assert doubled == 42
    assert name.startswith(THREAD_NAME_PREFIX)
    assert name != threading.current_thread().name


def test_an_exception_of_the_call_reaches_the_caller() -> None:
    def refuse() -> None:
        raise LookupError("no such patient")

    with pytest.raises(LookupError, match="no such patient"):
        asyncio.run(run_blocking(refuse))


def test_the_call_sees_the_callers_context_and_changes_only_its_copy() -> None:
    def label_then_relabel() -> str:
        seen = request_label.get()
        request_label.set("changed in the thread")
        return seen

    async def caller() -> tuple[str, str]:
        request_label.set("request 7")
        seen = await run_blocking(label_then_relabel)
        return seen, request_label.get()

    assert asyncio.run(caller()) == ("request 7", "request 7")


def test_no_more_than_max_threads_calls_run_at_once() -> None:
    lock = threading.Lock()
    release = threading.Event()
    running = 0
    peak = 0

    def hold() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(timeout=30)
        with lock:
            running -= 1

    async def many() -> None:
        calls = [asyncio.ensure_future(run_blocking(hold)) for _ in range(MAX_THREADS + 5)]
        deadline = time.monotonic() + 20
        while running < MAX_THREADS and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # time for any call beyond the limit to start, were it let
        assert running == MAX_THREADS
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(many())
    assert peak == MAX_THREADS
    assert running == 0
