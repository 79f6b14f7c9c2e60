"""Group commit: concurrent small writes of one process stored in one transaction.

A single reading costs little to store, but each request paid alone for its own transaction:
the round trips of half a dozen statements, the commit, and SQLAlchemy's Python work per
statement, some 4 ms of server CPU for one reading. `GroupCommit` lets the requests that arrive
while a write is under way wait for the next one, and writes all of them together: one
transaction, multi-row statements (`ingest.ingest_many`), one commit. Under no load a request is
written at once, alone (no timer: a group is whatever arrived during the previous write).

The guarantees are those of writing each request alone:

* a request is answered only after the commit that stored it (nothing acknowledged is lost);
* a request refused before anything is written (not permitted, unreadable) is answered with its
  own problem and takes nothing from the others;
* if the shared transaction fails, it is rolled back and every request of the group is written
  again alone, in a transaction of its own: one bad request never fails the others.

One `GroupCommit` per application and event loop (`for_app`); the writes themselves run in
worker threads. On PostgreSQL two groups may be under way at once, each in its own transaction:
a group's COMMIT waits for the disk, and the requests arriving meanwhile need not wait for it
before being written (concurrent groups are like the transactions of two processes: the unique
constraints keep a reading sent to both stored once, and the loser answers it as a duplicate).
SQLite writes one transaction at a time anyway: there one group is under way at a time.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from jaejin.core.database import session_factory
from jaejin.core.threads import run_blocking

log = logging.getLogger(__name__)

JobT = TypeVar("JobT")
AnswerT = TypeVar("AnswerT")

#: At most this many requests in one transaction (the readings of one group go in one insert).
GROUP_MAX_JOBS: Final = 64
#: At most this many groups being written at once per process and loop, on a database that
#: writes transactions concurrently (PostgreSQL); each holds a connection.
GROUPS_IN_FLIGHT: Final = 2


@dataclass(frozen=True, slots=True)
class Refused:
    """A job's outcome when it was refused before anything of it was written: `problem` is
    raised to its caller, the group's transaction goes on without it."""

    problem: Exception


#: Writes jobs in the session's open transaction (never commits) and gives, per job in order,
#: its answer or `Refused`. Anything it raises fails the whole transaction.
WriteJobs = Callable[[Session, Sequence[JobT]], list["AnswerT | Refused"]]


@dataclass(slots=True)
class _Waiting(Generic[JobT, AnswerT]):
    job: JobT
    answer: asyncio.Future[AnswerT]


@dataclass(slots=True)
class _LoopQueue(Generic[JobT, AnswerT]):
    waiting: list[_Waiting[JobT, AnswerT]] = field(default_factory=list)
    #: Tasks draining the queue, each writing one group at a time; counted by the tasks
    #: themselves (a done task leaves `drainers` only a turn of the loop later, when a job
    #: submitted meanwhile must already start a new one).
    draining: int = 0
    #: Of those, the ones started and yet to take their first group: while one is, a new job
    #: joins its group rather than starting another.
    starting: int = 0
    #: The draining tasks, kept referenced: the loop holds tasks only weakly.
    drainers: set[asyncio.Task[None]] = field(default_factory=set)


class GroupCommit(Generic[JobT, AnswerT]):
    """Jobs submitted while a group is being written are written together next."""

    def __init__(self, engine: Engine, write: WriteJobs[JobT, AnswerT],
                 max_jobs: int = GROUP_MAX_JOBS, in_flight: int | None = None) -> None:
        self._engine = engine
        self._write = write
        self._max_jobs = max_jobs
        #: Groups written at once at most (None: `GROUPS_IN_FLIGHT` where the database writes
        #: transactions concurrently, else 1).
        self.in_flight = in_flight if in_flight is not None else (
            GROUPS_IN_FLIGHT if engine.dialect.name == "postgresql" else 1)
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopQueue[JobT, AnswerT]] = weakref.WeakKeyDictionary()
        #: Groups written and the jobs they held (to see how much grouping a load gets).
        self.groups_written = 0
        self.jobs_written = 0

    async def submit(self, job: JobT) -> AnswerT:
        """The job's answer once the transaction that stored it has committed."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        answer: asyncio.Future[AnswerT] = loop.create_future()
        queue.waiting.append(_Waiting(job, answer))
        if not queue.starting and queue.draining < self.in_flight:
            queue.draining += 1
            queue.starting += 1
            drainer = loop.create_task(self._drain(queue))
            queue.drainers.add(drainer)
            drainer.add_done_callback(queue.drainers.discard)
        return await answer

    async def _drain(self, queue: _LoopQueue[JobT, AnswerT]) -> None:
        try:
            # Requests already read in this turn of the loop join the first group.
            try:
                await asyncio.sleep(0)
            finally:
                queue.starting -= 1
            while queue.waiting:
                group = queue.waiting[:self._max_jobs]
                del queue.waiting[:self._max_jobs]
                self.groups_written += 1
                self.jobs_written += len(group)
                try:
                    outcomes = await run_blocking(self._write_group,
                                                  [one.job for one in group])
                except Exception as error:  # handed to every waiter
                    outcomes = [error] * len(group)
                except BaseException:  # cancelled (the loop shuts down): nobody is answered
                    for waiting in group + queue.waiting:
                        waiting.answer.cancel()
                    raise
                if len(outcomes) != len(group):  # a broken `write`: never leave anyone waiting
                    outcomes = [RuntimeError(f"{len(outcomes)} answers to {len(group)} jobs")
                                ] * len(group)
                for waiting, outcome in zip(group, outcomes, strict=True):
                    if waiting.answer.done():  # the caller went away: stored all the same
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.answer.set_exception(outcome)
                    else:
                        waiting.answer.set_result(outcome)
        finally:
            queue.draining -= 1

    def _write_group(self, jobs: list[JobT]) -> list[Any]:
        """Per job its answer or the exception to raise; in a worker thread."""
        try:
            return self._write_committed(jobs)
        except Exception:
            if len(jobs) == 1:
                raise
            log.warning("group of %d writes failed; writing each alone", len(jobs),
                        exc_info=True)
        outcomes: list[Any] = []
        for job in jobs:
            try:
                outcomes.extend(self._write_committed([job]))
            except Exception as error:  # this job's own failure, answered so
                outcomes.append(error)
        return outcomes

    def _write_committed(self, jobs: list[JobT]) -> list[Any]:
        with session_factory(self._engine)() as session:
            outcomes = self._write(session, jobs)
            session.commit()
        return [one.problem if isinstance(one, Refused) else one for one in outcomes]


#: Where `for_app` keeps an application's group commits, by name and engine.
APP_STATE_KEY: Final = "monitoring_group_commits"


def for_app(state: Any, name: str, engine: Engine,
            write: WriteJobs[JobT, AnswerT]) -> GroupCommit[JobT, AnswerT]:
    """The application's `GroupCommit` called `name` (created on first use, per engine: tests
    swap the application's engine)."""
    found: dict[tuple[str, int], GroupCommit[Any, Any]] | None = getattr(
        state, APP_STATE_KEY, None)
    if found is None:
        found = {}
        setattr(state, APP_STATE_KEY, found)
    committer = found.get((name, id(engine)))
    if committer is None:
        committer = found[(name, id(engine))] = GroupCommit(engine, write)
    return committer


__all__ = ["APP_STATE_KEY", "GROUP_MAX_JOBS", "GroupCommit", "Refused", "WriteJobs", "for_app"]
