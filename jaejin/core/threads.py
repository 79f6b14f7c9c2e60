"""Blocking work (database sessions) run off the event loop, for the few hottest routes.

Starlette's `run_in_threadpool` goes through anyio's `to_thread.run_sync`: a capacity limiter,
a cancel scope, the current task and async library looked up, an idle-worker pruning clock,
a condition notified per call. Profiled under bookings that was ~12 % of a worker's samples,
for a call whose own work is a few hundred microseconds of database session. `run_blocking`
hands the call to one process-wide `ThreadPoolExecutor` with `loop.run_in_executor` instead.

What is kept from anyio's way:
* at most `MAX_THREADS` calls run at once (anyio's default limiter has 40 tokens), the rest
  wait their turn in the executor's queue;
* the call runs in a copy of the caller's context (contextvars: request-scoped state such as
  a tracing span is seen by the call, and what the call sets does not leak back).

What differs: a caller cancelled while its call runs is told at once (the call itself runs to
its end, as a thread cannot be interrupted); anyio would keep the caller waiting until the call
returned. A call not started yet when its caller is cancelled is not started at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Final, TypeVar

ResultT = TypeVar("ResultT")

#: As many calls at once as anyio's default thread limiter allows.
MAX_THREADS: Final = 40
THREAD_NAME_PREFIX: Final = "jaejin-blocking"

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def blocking_executor() -> ThreadPoolExecutor:
    """The process's executor, made at first use (threads themselves start as calls need)."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=MAX_THREADS,
                                               thread_name_prefix=THREAD_NAME_PREFIX)
    return _executor


async def run_blocking(function: Callable[..., ResultT], /, *args: object) -> ResultT:
    """`function(*args)` in a worker thread, in a copy of the caller's context."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(blocking_executor(), copy_context().run, function, *args)
