"""`jaejin serve --workers 2` in real processes on real sockets: connections spread evenly over
the workers however they arrive, a graceful stop, a killed worker replaced, WebSockets and proxy
headers through the hand-over, a broken app refused, and the uvicorn internals the server relies
on (jaejin/core/serving.py names them; an uvicorn upgrade that changes them fails here).

The servers run `tests.core.serving_apps:app`, whose answers carry the pid of the worker that
gave them, against the test database (migrated by the session's fixture, hence --no-migrate).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.asyncio.client import connect as websocket_client
from websockets.sync.client import connect as websocket_connect

from jaejin.core import serving
from tests.core.serving_apps import LIFESPAN_LOG

REPOSITORY = Path(__file__).resolve().parents[2]
TEST_APP = "tests.core.serving_apps:app"
STARTUP_SECONDS = 60


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    lifespan_log: Path

    def lifespan(self) -> list[tuple[str, int]]:
        if not self.lifespan_log.exists():
            return []
        lines = self.lifespan_log.read_text().split()
        return [(phase, int(pid)) for phase, pid in zip(lines[::2], lines[1::2], strict=True)]

    def workers(self) -> set[int]:
        """The pids of the worker processes running now."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def started_workers(self) -> set[int]:
        """Running workers whose app has finished its lifespan startup."""
        started = {pid for phase, pid in self.lifespan() if phase == "startup"}
        return started & self.workers()

    def wait_for_workers(self, count: int, excluding: Collection[int] = ()) -> set[int]:
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(self.started_workers() - set(excluding)) < count:
            assert self.process.poll() is None, f"the server exited with {self.process.returncode}"
            assert time.monotonic() < deadline, f"workers not started: {self.lifespan()}"
            time.sleep(0.05)
        # A worker records its startup just before it tells the supervisor it takes connections.
        time.sleep(0.3)
        return self.started_workers()

    def get(self, path: str, headers: dict[str, str] | None = None) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            assert response.status == 200
            return response.read().decode()
        finally:
            connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(database_url: str, tmp_path: Path, *, workers: int = 2,
                   app: str = TEST_APP, wait: bool = True) -> Iterator[RunningServer]:
    port = _free_port()
    lifespan_log = tmp_path / f"lifespan-{port}.log"
    environment = os.environ | {
        "JAEJIN_DATABASE_URL": database_url,
        "JAEJIN_SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256-0123456789",
        "JAEJIN_ENVIRONMENT": "test",
        LIFESPAN_LOG: str(lifespan_log),
    }
    environment.pop("JAEJIN_REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jaejin", "serve", "--app", app, "--port", str(port),
         "--workers", str(workers), "--no-migrate", "--no-access-log", "--log-level", "warning"],
        cwd=REPOSITORY, env=environment)
    server = RunningServer(process, port, lifespan_log)
    try:
        if wait:
            server.wait_for_workers(workers)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _open_keep_alive_connections(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(count)]


def _answering_pid(connection: socket.socket) -> int:
    """GET /pid on a keep-alive connection; the pid in the answer."""
    connection.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(4096)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += connection.recv(4096)
    return int(body)


def _spread(connections: list[socket.socket]) -> Counter[int]:
    """Connections per answering worker, each asked twice (the same worker keeps a connection)."""
    spread: Counter[int] = Counter()
    for connection in connections:
        first, second = _answering_pid(connection), _answering_pid(connection)
        assert first == second, "a keep-alive connection moved between workers"
        spread[first] += 1
    return spread


def _established_per_worker(server: RunningServer, *, any_state: bool = False
                            ) -> Counter[int]:
    """The server's established TCP connections per worker, from the kernel (/proc); with
    `any_state`, also those the client has closed but the worker not yet."""
    inodes_on_port = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if (int(fields[1].rsplit(":", 1)[1], 16) == server.port
                    and (any_state or fields[3] == "01")):
                inodes_on_port.add(fields[9])
    found: Counter[int] = Counter()
    for pid in server.workers():
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                target = os.readlink(descriptor)
                if target.startswith("socket:[") and target[8:-1] in inodes_on_port:
                    found[pid] += 1
    return found


def _wait_until_workers_closed_every_connection(server: RunningServer, but: int = 0) -> None:
    """Until the workers hold no more than `but` connections: the clients' closes are seen."""
    deadline = time.monotonic() + 20
    while sum(_established_per_worker(server, any_state=True).values()) > but:
        assert time.monotonic() < deadline, "the workers kept closed connections"
        time.sleep(0.02)
    time.sleep(0.05)  # the close is counted in the same callback (uvloop: the next one)


# -- balance ---------------------------------------------------------------------------------


def test_keep_alive_connections_opened_back_to_back_are_spread_evenly(database_url, tmp_path):
    with running_server(database_url, tmp_path) as server:
        workers = server.started_workers()
        connections = _open_keep_alive_connections(server.port, 16)
        try:
            spread = _spread(connections)
            assert set(spread) == workers
            assert sorted(spread.values()) == [8, 8]
            assert sorted(_established_per_worker(server).values()) == [8, 8]
            # A pool reconnecting at once, before the workers have seen their clients leave.
            for connection in connections:
                connection.close()
            connections = _open_keep_alive_connections(server.port, 16)
            assert sorted(_spread(connections).values()) == [8, 8]
        finally:
            for connection in connections:
                connection.close()


def test_connections_waiting_while_the_workers_start_are_spread_evenly(database_url, tmp_path):
    # Not given all to the worker that happens to finish its startup first.
    with running_server(database_url, tmp_path, wait=False) as server:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", server.port), timeout=20)
                break
            except ConnectionRefusedError:  # not bound yet
                assert time.monotonic() < deadline
                time.sleep(0.02)
        connections = [first, *_open_keep_alive_connections(server.port, 15)]
        try:
            assert not server.started_workers(), "too late: the workers had started already"
            assert sorted(_spread(connections).values()) == [8, 8]
        finally:
            for connection in connections:
                connection.close()


def test_new_connections_go_to_a_worker_holding_far_fewer(database_url, tmp_path):
    # "Far": more than the supervisor's slack, within which workers simply take turns.
    count = 2 * (serving.Supervisor.BALANCE_SLACK + 12)
    with running_server(database_url, tmp_path) as server:
        connections = _open_keep_alive_connections(server.port, count)
        pids = {connection: _answering_pid(connection) for connection in connections}
        emptied = pids[connections[0]]
        for connection in connections:
            if pids[connection] == emptied:
                connection.close()
        _wait_until_workers_closed_every_connection(server, but=count // 2)

        newcomers = _open_keep_alive_connections(server.port, 4)
        try:
            assert _spread(newcomers) == Counter({emptied: 4})
        finally:
            for connection in connections + newcomers:
                connection.close()


# -- what works under uvicorn keeps working --------------------------------------------------


def test_a_websocket_round_trip_goes_through_the_hand_over(database_url, tmp_path):
    with running_server(database_url, tmp_path) as server:
        with websocket_connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=20) as ws:
            ws.send("hello")
            text, pid = str(ws.recv(timeout=20)).split()
        assert text == "hello"
        assert int(pid) in server.started_workers()


def test_forwarded_headers_are_trusted_from_the_configured_proxies_only(database_url, tmp_path):
    # JAEJIN_TRUSTED_PROXIES is 127.0.0.1 by default: the test client is the proxy.
    with running_server(database_url, tmp_path) as server:
        assert server.get("/client", {"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"
        assert server.get("/client") == "127.0.0.1"


def test_sigterm_answers_the_request_in_flight_then_exits_0(database_url, tmp_path):
    with running_server(database_url, tmp_path) as server:
        workers = server.started_workers()
        answers: list[str] = []
        slow = threading.Thread(target=lambda: answers.append(server.get("/slow?seconds=2")))
        slow.start()
        deadline = time.monotonic() + 20
        while not _established_per_worker(server):
            assert time.monotonic() < deadline, "the slow request never reached a worker"
            time.sleep(0.02)
        time.sleep(0.5)  # in flight: the worker is in its 2 s sleep
        server.process.send_signal(signal.SIGTERM)
        slow.join(timeout=20)
        assert server.process.wait(timeout=30) == 0
        assert answers and int(answers[0]) in workers
        shut_down = {pid for phase, pid in server.lifespan() if phase == "shutdown"}
        assert shut_down == workers
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(database_url, tmp_path):
    with running_server(database_url, tmp_path) as server:
        first, second = sorted(server.started_workers())
        os.kill(first, signal.SIGKILL)
        workers = server.wait_for_workers(2, excluding={first})
        assert first not in workers and second in workers
        connections = _open_keep_alive_connections(server.port, 16)
        try:
            spread = _spread(connections)
            assert set(spread) == workers and sorted(spread.values()) == [8, 8]
        finally:
            for connection in connections:
                connection.close()


def test_workers_stop_when_their_supervisor_is_killed(database_url, tmp_path):
    with running_server(database_url, tmp_path) as server:
        workers = server.started_workers()
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in workers):
            assert time.monotonic() < deadline, "orphaned workers kept running"
            time.sleep(0.1)
        assert {pid for phase, pid in server.lifespan() if phase == "shutdown"} == workers


def _not_zombie(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def test_an_app_that_cannot_start_stops_the_server_with_uvicorns_startup_failure(
        database_url, tmp_path):
    with running_server(database_url, tmp_path, app="tests.core.serving_apps:missing",
                        wait=False) as server:
        assert server.process.wait(timeout=STARTUP_SECONDS) == uvicorn.config.STARTUP_FAILURE


# -- the uvicorn internals serving.py relies on (uvicorn 0.54.0) -----------------------------


def test_uvicorn_still_has_the_internals_the_hand_over_relies_on():
    config = uvicorn.Config(TEST_APP, workers=2, http="httptools", loop="uvloop")
    config.load()
    protocol_parameters = inspect.signature(config.http_protocol_class).parameters
    assert {"config", "server_state", "app_state", "_loop"} <= set(protocol_parameters)
    server = uvicorn.Server(config)
    assert isinstance(server.server_state, ServerState)
    assert isinstance(server.server_state.connections, set)
    for method in ("startup", "shutdown", "on_tick", "main_loop"):
        assert inspect.iscoroutinefunction(getattr(uvicorn.Server, method)), method
    assert list(inspect.signature(uvicorn.Server.startup).parameters) == ["self", "sockets"]
    assert uvicorn.config.STARTUP_FAILURE == 3
    assert callable(config.bind_socket) and callable(config.configure_logging)
    assert isinstance(config.backlog, int)
    # `Server._serve` creates the lifespan before `startup`, which reads its state.
    assert "self.lifespan = config.lifespan_class(config)" in inspect.getsource(
        uvicorn.Server._serve)


def test_the_worker_adopts_a_handed_over_connection_in_process():
    """HandoffServer without processes: descriptors sent over the socketpair are served by
    uvicorn's protocols (HTTP, then one upgraded to a WebSocket), each counted closed the moment
    its client leaves (through uvicorn's `server_state.connections`)."""
    board = serving.Board.create(1)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    config = uvicorn.Config(TEST_APP, lifespan="on", log_level="warning")
    server = serving.HandoffServer(config, theirs, 0, board)

    def hand_over() -> socket.socket:
        client, accepted = socket.socketpair()
        socket.send_fds(ours, [b"c"], [accepted.fileno()])
        accepted.close()
        client.setblocking(False)
        return client

    async def scenario() -> list[object]:
        seen: list[object] = []
        serving_task = asyncio.create_task(server.serve())
        while not board.ready[0]:
            await asyncio.sleep(0.01)
        client = hand_over()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
        seen.append(await asyncio.wait_for(loop.sock_recv(client, 4096), 10))
        seen.append(board.closed[0])
        client.close()
        await asyncio.sleep(0.2)
        seen.append(board.closed[0])

        async with websocket_client("ws://test/echo", sock=hand_over()) as websocket:
            await websocket.send("hello")
            seen.append(await asyncio.wait_for(websocket.recv(), 10))
            seen.append(board.closed[0])
        await asyncio.sleep(0.2)
        seen.append(board.closed[0])
        server.should_exit = True
        await serving_task
        return seen

    answer, open_http, closed_http, echo, open_websocket, closed_websocket = asyncio.run(
        scenario())
    ours.close()
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(str(os.getpid()).encode())
    assert (open_http, closed_http) == (0, 1)
    assert echo == f"hello {os.getpid()}"
    assert (open_websocket, closed_websocket) == (1, 2)
