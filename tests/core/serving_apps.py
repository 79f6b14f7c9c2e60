"""Bare ASGI apps for tests/core/test_serving.py, served by `jaejin serve --app` in real worker
processes: each answer says which process gave it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

#: Where the app appends "startup <pid>" / "shutdown <pid>" (set by the test).
LIFESPAN_LOG = "JAEJIN_TEST_LIFESPAN_LOG"


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """GET /pid: this worker's pid; GET /slow?seconds=S: the pid after S seconds; GET /client:
    the client address the app sees (after proxy headers); a WebSocket echoes each text
    message with the pid."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            phase = message["type"].removeprefix("lifespan.")
            _record(phase)
            await send({"type": f"lifespan.{phase}.complete"})
            if phase == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": f"{message.get('text')} {os.getpid()}"})
    assert scope["type"] == "http"
    if scope["path"] == "/slow":
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query["seconds"][0]))
    body = (str(scope["client"][0]) if scope["path"] == "/client" and scope["client"]
            else str(os.getpid())).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _record(phase: str) -> None:
    path = os.environ.get(LIFESPAN_LOG)
    if path:
        with Path(path).open("a") as log:
            log.write(f"{phase} {os.getpid()}\n")
