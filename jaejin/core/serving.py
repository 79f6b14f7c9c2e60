"""`jaejin serve --workers N`: one supervisor process accepts every connection and hands it to
a worker process, in turn, keeping the workers' open connections even.

Why not uvicorn's own `--workers`: there every worker accepts from one shared listening socket,
and when connections arrive together (a proxy's keep-alive pool, a load generator, a reconnect
storm after a deploy) the first worker to wake takes nearly all of them and keeps them for their
whole life. Measured: 16 keep-alive connections sat 16/0 or 15/1 on 2 workers, so one process
(one core at most, one GIL) did all the work while the other idled. Node.js's cluster module
hands connections out from its primary process by default on Linux for the same reason.
SO_REUSEPORT (one listening socket per worker) would let the kernel hash connections instead,
but at random: 16 connections often split 10/6.

How:
- The supervisor binds the socket, accepts, and sends each accepted descriptor (SCM_RIGHTS over
  a Unix SOCK_SEQPACKET socketpair, one per worker) to the ready workers in turn, skipping
  any that holds many more open connections than the least loaded (Supervisor.BALANCE_SLACK
  says why not simply the fewest first). It counts what it handed to each worker; each worker
  counts what it has closed again, the moment it does (shared memory, one writer per counter).
  At start it accepts only once every worker is ready (or STARTUP_GRACE has passed): the first
  burst is not all given to the worker that happened to start first.
- A worker is uvicorn's `Server` whose listening socket is replaced by its end of the
  socketpair: it adopts each descriptor with `loop.connect_accepted_socket(<uvicorn's HTTP
  protocol>, sock)`; from then on the connection is served exactly as one uvicorn accepted
  itself (HTTP keep-alive, WebSocket upgrade, proxy headers, limits), with lifespan startup and
  shutdown in each worker.
- SIGTERM or SIGINT to the supervisor: it stops accepting, passes SIGTERM on to the workers
  (each answers its in-flight requests, closes idle connections, runs lifespan shutdown), waits
  for them and returns (exit 0). A worker that exits on its own or is killed is replaced; one
  whose app fails to start stops the server with uvicorn's STARTUP_FAILURE status instead of
  being restarted forever. A worker whose supervisor vanished (socketpair closed) shuts down.
- Workers are spawned, not forked: the supervisor runs threads (the audit sealer) whose locks a
  fork would copy mid-use.
- Cost: one accept and one sendmsg in the supervisor per connection (not per request): nothing
  for keep-alive traffic, a few tens of microseconds per connection otherwise.

uvicorn internals this relies on (uvicorn 0.54.0; tests/core/test_serving.py exercises each, so
an upgrade that changes them fails there):
- `Server.startup(sockets)` is where listening sockets become servers (overridden here, with
  `Server.lifespan` `.startup()`/`.should_exit`/`.state`, `Server.servers`, `Server.started`);
  `Server.server_state.connections` holds the open connections, and every protocol takes it at
  construction and calls its `add`, `discard` or `remove` (an upgraded WebSocket replaces its
  HTTP protocol there): replaced here by a set that reports each change; `Server.shutdown`
  closes `Server.servers` then shuts every connection down gracefully.
- `config.http_protocol_class(config=, server_state=, app_state=, _loop=)` is the protocol
  factory, built as `Server.startup` builds it; `config.load()`, `config.bind_socket()`,
  `config.configure_logging()`, `config.backlog`.
- `uvicorn.config.STARTUP_FAILURE` (3) is a worker's exit status when its app did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("uvicorn.error")

#: Workers are spawned: see the module docstring.
_spawn = multiprocessing.get_context("spawn")
#: The byte each handed-over descriptor travels with (SEQPACKET cannot send an empty message).
_HANDOFF_MARK = b"c"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(app: str, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: bool = True, forwarded_allow_ips: str | None = None,
          log_level: str | None = None, loop: str = "auto", http: str = "auto") -> None:
    """Serve the ASGI app named by the import string `app` until SIGTERM or SIGINT.

    One worker: plain `uvicorn.run`. Several: a supervisor that balances connections (module
    docstring). `loop="auto"` and `http="auto"` take uvloop and httptools when installed.
    Proxy headers are trusted from `forwarded_allow_ips` only. Exits with STARTUP_FAILURE when
    the app cannot start.
    """
    options: dict[str, Any] = dict(
        host=host, port=port, access_log=access_log, proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips, log_level=log_level, loop=loop, http=http)
    if workers <= 1:
        uvicorn.run(app, **options)
        return
    config = uvicorn.Config(app, workers=workers, **options)
    status = Supervisor(config, workers).run()
    if status:
        sys.exit(status)


# -- the shared board: who may take connections and how many each holds ---------------------


@dataclass
class Board:
    """Per worker slot, in shared memory. `handed` is written by the supervisor only; `closed`
    and `ready` by the slot's worker only (so no locks: a reader sees a slightly old value at
    worst)."""

    handed: ctypes.Array[Any]  # int64: connections given to the slot's current worker
    closed: ctypes.Array[Any]  # int64: ... of which that worker has closed again
    ready: ctypes.Array[Any]  # int8: 1 while that worker takes connections

    @classmethod
    def create(cls, slots: int) -> Board:
        return cls(_spawn.RawArray("q", slots), _spawn.RawArray("q", slots),
                   _spawn.RawArray("b", slots))

    def open_connections(self, slot: int) -> int:
        return int(self.handed[slot] - self.closed[slot])

    def reset(self, slot: int) -> None:
        """For a new worker in the slot (only while no worker runs in it)."""
        self.handed[slot] = self.closed[slot] = self.ready[slot] = 0


# -- the worker ------------------------------------------------------------------------------


class _CountingSet(set[Any]):
    """`server_state.connections` that reports every change (uvicorn's protocols add and
    discard or remove themselves)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def add(self, element: Any) -> None:
        super().add(element)
        self._on_change()

    def discard(self, element: Any) -> None:
        super().discard(element)
        self._on_change()

    def remove(self, element: Any) -> None:
        super().remove(element)
        self._on_change()


class HandoffServer(uvicorn.Server):
    """uvicorn's server taking its connections from the supervisor instead of a listener."""

    def __init__(self, config: uvicorn.Config, handoff: socket.socket, slot: int,
                 board: Board) -> None:
        super().__init__(config)
        self.handoff = handoff
        self.slot = slot
        self.board = board
        #: Descriptors received so far (adopted, being adopted, or failed to adopt).
        self.received = 0
        self._adoptions: set[asyncio.Task[None]] = set()
        self._create_protocol: Callable[[], asyncio.Protocol] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # As uvicorn's `Server.startup`, with the socketpair in place of a listening socket.
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state,
                app_state=self.lifespan.state, _loop=None)
            return protocol

        self._create_protocol = create_protocol
        self.server_state.connections = _CountingSet(self.publish_closed)
        self.servers = []
        self.handoff.setblocking(False)
        asyncio.get_running_loop().add_reader(self.handoff.fileno(), self._receive)
        self.started = True
        self.board.ready[self.slot] = 1
        log.info("Worker [%d] takes connections", os.getpid())

    def _receive(self) -> None:
        """Adopt every descriptor waiting on the socketpair."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, descriptors, flags, _address = socket.recv_fds(self.handoff, 16, 1)
            except BlockingIOError:
                return
            except OSError:
                message, descriptors, flags = b"", [], 0
            if not message and not descriptors:
                # The supervisor is gone: nobody will hand out connections or stop this worker.
                log.warning("Worker [%d] lost its supervisor; shutting down", os.getpid())
                loop.remove_reader(self.handoff.fileno())
                self.should_exit = True
                return
            self.received += 1
            if flags & socket.MSG_CTRUNC or not descriptors:
                log.error("Worker [%d] could not receive a connection (descriptor limit?)",
                          os.getpid())
                for descriptor in descriptors:
                    os.close(descriptor)
                continue
            task = loop.create_task(self._adopt(socket.socket(fileno=descriptors[0])))
            self._adoptions.add(task)
            task.add_done_callback(self._adopted)

    async def _adopt(self, connection: socket.socket) -> None:
        assert self._create_protocol is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._create_protocol, connection, ssl=self.config.ssl)
        except OSError:  # the client left before it was adopted
            connection.close()

    def _adopted(self, task: asyncio.Task[None]) -> None:
        self._adoptions.discard(task)
        self.publish_closed()

    def publish_closed(self) -> None:
        """Tell the supervisor how many received connections are closed again."""
        still_open = len(self.server_state.connections) + len(self._adoptions)
        self.board.closed[self.slot] = self.received - still_open

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.board.ready[self.slot] = 0
        with contextlib.suppress(ValueError, OSError):  # already removed when orphaned
            self._receive()  # those handed over just before the stop are shut down with the rest
            asyncio.get_running_loop().remove_reader(self.handoff.fileno())
        if self._adoptions:
            await asyncio.wait(set(self._adoptions))
        await super().shutdown(sockets)
        self.handoff.close()


def _run_worker(config: uvicorn.Config, handoff: socket.socket, slot: int, board: Board
                ) -> None:
    """A worker process's body (spawned: everything it gets is pickled)."""
    config.configure_logging()
    with contextlib.suppress(KeyboardInterrupt):  # the supervisor asked it to stop: no trace
        HandoffServer(config, handoff, slot, board).run()


# -- the supervisor --------------------------------------------------------------------------


@dataclass
class _Worker:
    slot: int
    process: SpawnProcess
    handoff: socket.socket  # the supervisor's end
    became_ready: bool = False


class Supervisor:
    """Accepts connections and hands them to the ready workers in turn (BALANCE_SLACK)."""

    #: Seconds between checks while a worker is still starting (readiness is not signalled).
    STARTING_POLL = 0.05
    #: At start, seconds to wait for every worker before serving with those that are ready.
    STARTUP_GRACE = 60.0
    #: Workers holding at most this many connections more than the least loaded one take new
    #: connections in turn; those holding more wait until the others catch up. Why not simply
    #: the fewest first: a busy worker sees its clients' closes late, so right after a pool
    #: closed and reopened its connections it still counts the old ones, and a fewest-first
    #: burst of 16 went 12/4 (measured in bench_scheduling under load 11). In turn, a burst
    #: splits evenly; the slack still steers connections to a worker holding far fewer (the
    #: replacement of one that died).
    BALANCE_SLACK = 16

    def __init__(self, config: uvicorn.Config, workers: int) -> None:
        self.config = config
        self.board = Board.create(workers)
        self.workers: list[_Worker] = []
        self.slots = workers
        self.signals: list[int] = []
        #: The slot whose turn it is (see BALANCE_SLACK).
        self.next_slot = 0
        self.selector = selectors.DefaultSelector()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (then 0) or until a worker's app fails to start (then
        STARTUP_FAILURE)."""
        listener = self.config.bind_socket()
        listener.listen(self.config.backlog)
        listener.setblocking(False)
        wake_reader, wake_writer = socket.socketpair()
        wake_writer.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
        previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        self.selector.register(wake_reader, selectors.EVENT_READ)
        log.info("Started supervisor process [%d] with %d workers", os.getpid(), self.slots)
        status = 0
        try:
            self.workers = [self._start_worker(slot) for slot in range(self.slots)]
            status = self._serve(listener, wake_reader)
        finally:
            listener.close()
            self._stop_workers()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            wake_reader.close()
            wake_writer.close()
            self.selector.close()
            log.info("Stopped supervisor process [%d]", os.getpid())
        return status

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.signals.append(sig)

    def _serve(self, listener: socket.socket, wake_reader: socket.socket) -> int:
        listening = False
        all_were_ready = False
        grace_ends = time.monotonic() + self.STARTUP_GRACE
        while not self.signals:
            ready = [self.board.ready[worker.slot] for worker in self.workers]
            all_were_ready = all_were_ready or all(ready)
            may_accept = any(ready) and (all_were_ready or time.monotonic() > grace_ends)
            if may_accept and not listening:
                self.selector.register(listener, selectors.EVENT_READ)
            elif listening and not may_accept:
                self.selector.unregister(listener)
            listening = may_accept
            timeout = None if all(ready) else self.STARTING_POLL
            for key, _events in self.selector.select(timeout):
                if key.fileobj is listener:
                    self._accept_all(listener)
                elif key.fileobj is wake_reader:
                    with contextlib.suppress(BlockingIOError):
                        wake_reader.recv(64)
                else:
                    failed = self._replace(key.data)
                    if failed:
                        return failed
        log.info("Received %s, stopping", signal.Signals(self.signals[0]).name)
        return 0

    def _accept_all(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. EMFILE: leave the rest in the backlog for now
                log.error("accept failed: %s", error)
                return
            with connection:
                self._hand_over(connection)

    def _hand_over(self, connection: socket.socket) -> None:
        for worker in self._choices():
            try:
                socket.send_fds(worker.handoff, [_HANDOFF_MARK], [connection.fileno()])
            except OSError:  # full (worker far behind) or gone (being replaced): the next one
                continue
            self.board.handed[worker.slot] += 1
            self.next_slot = (worker.slot + 1) % self.slots
            return
        log.error("No worker could take a connection; it is closed")

    def _choices(self) -> list[_Worker]:
        """The ready workers in the order to try: in turn (round robin) those within
        BALANCE_SLACK of the fewest open connections, then the others."""
        ready = [worker for worker in self.workers if self.board.ready[worker.slot]]
        if not ready:
            return []
        held = {worker.slot: self.board.open_connections(worker.slot) for worker in ready}
        least = min(held.values())
        in_turn = sorted(ready, key=lambda worker: (worker.slot - self.next_slot) % self.slots)
        return ([worker for worker in in_turn if held[worker.slot] <= least + self.BALANCE_SLACK]
                + [worker for worker in in_turn if held[worker.slot] > least + self.BALANCE_SLACK])

    def _start_worker(self, slot: int) -> _Worker:
        self.board.reset(slot)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        process = _spawn.Process(target=_run_worker, name=f"jaejin-worker-{slot}",
                                 args=(self.config, theirs, slot, self.board))
        process.start()
        theirs.close()
        self.selector.register(process.sentinel, selectors.EVENT_READ, slot)
        return _Worker(slot, process, ours)

    def _replace(self, slot: int) -> int:
        """The worker in `slot` exited: start another (0), or STARTUP_FAILURE when its app
        never started."""
        worker = self.workers[slot]
        self.selector.unregister(worker.process.sentinel)
        worker.process.join()
        worker.handoff.close()
        if worker.process.exitcode == STARTUP_FAILURE:
            log.error("Worker [%s] failed to start; stopping", worker.process.pid)
            return STARTUP_FAILURE
        log.warning("Worker [%s] exited with %s; starting another", worker.process.pid,
                    worker.process.exitcode)
        self.workers[slot] = self._start_worker(slot)
        return 0

    def _stop_workers(self) -> None:
        """SIGTERM to every worker, then wait: each finishes its requests in flight. A further
        signal to the supervisor is passed on (a second SIGINT makes uvicorn force the exit)."""
        running = [worker for worker in self.workers if worker.process.is_alive()]
        for worker in running:
            _signal_process(worker.process, signal.SIGTERM)
        passed_on = len(self.signals)
        while running:
            running[0].process.join(timeout=0.1)
            for sig in self.signals[passed_on:]:
                for worker in running:
                    _signal_process(worker.process, sig)
            passed_on = len(self.signals)
            running = [worker for worker in running if worker.process.is_alive()]
        for worker in self.workers:
            worker.handoff.close()


def _signal_process(process: SpawnProcess, sig: int) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(process.pid, sig)
