"""The real application under uvicorn on a free loopback port, for tests that need a browser.

Use `running_server(app)` as a context manager (the browser fixtures wrap it in a session
fixture): it binds 127.0.0.1:0 itself, so two test workers never race for a port, waits until
/healthz answers, and stops the server when the block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_SECONDS = 15.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


class LiveServerError(RuntimeError):
    """The server did not come up (or go down) in time."""


@dataclass(frozen=True, slots=True)
class LiveServer:
    url: str
    port: int

    def path(self, path: str) -> str:
        return f"{self.url}{path}"


def _bound_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _wait_until_healthy(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise LiveServerError("the server thread stopped while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as error:
            last_error = error
        time.sleep(0.05)
    raise LiveServerError(f"{url}/healthz did not answer in time: {last_error}")


@contextmanager
def running_server(app: FastAPI) -> Iterator[LiveServer]:
    listener = _bound_socket()
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                              name=f"live-server-{port}", daemon=True)
    thread.start()
    live = LiveServer(url=f"http://127.0.0.1:{port}", port=port)
    try:
        _wait_until_healthy(live.url, thread)
        yield live
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_SECONDS)
        listener.close()
        if thread.is_alive():
            raise LiveServerError("the server did not stop in time")
