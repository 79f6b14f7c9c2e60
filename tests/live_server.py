"""The real application under uvicorn on a loopback port, for tests that need a real server.

Two ways:
- `running_server(app)`: the test's own app object in a thread of the test process (the browser
  fixtures wrap it in a session fixture). It binds 127.0.0.1:0 itself, so two test workers never
  race for a port.
- `uvicorn_process(environment)`: `uvicorn jaejin.asgi:app` in a process of its own, for tests
  that kill a server or run several workers.

Both wait until /healthz answers before the test goes on, and how long that takes depends on
the machine's load (importing and building the app is a few CPU seconds, and a shared two-core
machine running browsers may give the server a fraction of a core). So the wait is on readiness,
with a deadline far beyond any real start-up; a server that is really broken is noticed at once
(its thread or process ends) and reported with what it printed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

#: Far beyond a real start-up (about 3 CPU seconds), well inside pytest's per-test timeout.
STARTUP_DEADLINE_SECONDS = 120.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0
REPOSITORY = Path(__file__).resolve().parents[1]


class LiveServerError(RuntimeError):
    """The server did not come up (or go down)."""


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


def wait_until_healthy(url: str, still_starting: Callable[[], str | None],
                       deadline_seconds: float = STARTUP_DEADLINE_SECONDS) -> None:
    """Poll `{url}/healthz` until it answers 200.

    `still_starting()` returns None while the server may still come up, or why it never will
    (its thread or process ended): then this fails at once instead of waiting out the deadline.
    """
    deadline = time.monotonic() + deadline_seconds
    pause = 0.02
    last_error: Exception | str | None = None
    while True:
        ended = still_starting()
        if ended is not None:
            raise LiveServerError(f"the server at {url} stopped while starting: {ended}")
        try:
            answer = httpx.get(f"{url}/healthz", timeout=5.0)
            if answer.status_code == 200:
                return
            last_error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as error:
            last_error = error
        if time.monotonic() > deadline:
            raise LiveServerError(
                f"{url}/healthz did not answer within {deadline_seconds:.0f}s: {last_error!r}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


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
        wait_until_healthy(
            live.url, lambda: None if thread.is_alive() else "the server thread ended")
        yield live
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_SECONDS)
        listener.close()
        if thread.is_alive():
            raise LiveServerError("the server did not stop in time")


def free_port() -> int:
    """A loopback port free at the moment of asking (for a server in another process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """`uvicorn jaejin.asgi:app` running in a process of its own."""

    process: subprocess.Popen[bytes]
    live: LiveServer

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def port(self) -> int:
        return self.live.port


def _tail(path: Path, characters: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-characters:]
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def uvicorn_process(environment: Mapping[str, str | None],
                    port: int | None = None) -> Iterator[ServerProcess]:
    """The real app in its own process, on `port` or a free one; stopped (terminated, then
    killed) when the block ends. Its environment is this process's with `environment` applied
    (a None value removes the variable); JAEJIN_PUBLIC_BASE_URL is its own origin unless given.

    What the server prints goes to a file, never to a pipe nobody reads (a full pipe would
    block the server mid-test); its tail is in the error when it fails to start. A free port
    taken by someone else before the server bound it is replaced by another.
    """
    variables = {name: value for name, value in {**os.environ, **environment}.items()
                 if value is not None}
    with tempfile.TemporaryDirectory(prefix="jaejin-uvicorn-") as folder:
        output = Path(folder) / "server.log"
        for attempt in range(3):
            chosen = port or free_port()
            live = LiveServer(url=f"http://127.0.0.1:{chosen}", port=chosen)
            with output.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "jaejin.asgi:app", "--host", "127.0.0.1",
                     "--port", str(chosen), "--log-level", "warning", "--no-access-log"],
                    cwd=REPOSITORY, env={"JAEJIN_PUBLIC_BASE_URL": live.url, **variables},
                    stdout=log, stderr=subprocess.STDOUT)

            def still_starting(process: subprocess.Popen[bytes] = process) -> str | None:
                code = process.poll()
                return None if code is None else f"exit code {code}\n{_tail(output)}"

            try:
                wait_until_healthy(live.url, still_starting)
            except LiveServerError as error:
                _stop(process)
                port_taken = "address already in use" in str(error).lower()
                if port is None and port_taken and attempt < 2:
                    continue
                raise
            break
        try:
            yield ServerProcess(process, live)
        finally:
            _stop(process)
