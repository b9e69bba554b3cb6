"""A worker job driven by a timer of the GUI's event loop, and the jobs still alive. Qt-free.

Why: the restore runs in a worker process (``DiffCodeRestoreLib.worker.WorkerJob``); the module
polls it from a QTimer so Slicer stays responsive. The timer is injected (the Slicer logic passes a
QTimer, tests a fake), so everything here runs without the Slicer application. Every live job is
registered, so leaving Slicer during a run (``close_all`` on application exit or module cleanup, and
at interpreter exit) still stops the worker and deletes its temporary copy of the patient volume.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from DiffCodeRestoreLib.worker import CLEANUP_GRACE_S, WorkerJob, WorkerRequest

POLL_MS = 200


class JobRegistry:
    """The jobs started and not yet finished; ``close_all`` stops them and removes their folders."""

    def __init__(self) -> None:
        self._jobs: List["PolledJob"] = []
        self._lock = threading.Lock()

    def add(self, job: "PolledJob") -> None:
        with self._lock:
            if job not in self._jobs:
                self._jobs.append(job)

    def discard(self, job: "PolledJob") -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)

    @property
    def jobs(self) -> List["PolledJob"]:
        with self._lock:
            return list(self._jobs)

    def close_all(self, grace: float = CLEANUP_GRACE_S) -> None:
        """Stop every live job (asked first, killed after ``grace``) and delete its folder; no callbacks."""
        for job in self.jobs:
            job.close(grace)


JOBS = JobRegistry()
atexit.register(JOBS.close_all)


class PolledJob:
    """A ``WorkerJob`` polled from a timer; callbacks run in the thread of the timer (the GUI's).

    ``onEvent(event)`` gets every worker event (progress, status, warning, ...); ``onFinished(job)``
    runs once when the worker has ended (after ``wait`` too). ``outputNode`` / ``error`` hold the
    outcome once the finishing step has run. ``prepare(worker)`` writes the input files into the
    worker's folder before it starts; if it or the start fails, the folder is removed.
    ``makeTimer(intervalMs, callback)`` returns an object with ``start()`` and ``stop()``.
    """

    def __init__(self, worker: WorkerJob, onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None,
                 makeTimer: Optional[Callable[[int, Callable[[], None]], Any]] = None,
                 prepare: Optional[Callable[[WorkerJob], None]] = None, registry: Optional[JobRegistry] = None):
        self.worker = worker
        self.onEvent = onEvent
        self.onFinished = onFinished
        self.prepare = prepare
        self.registry = JOBS if registry is None else registry
        self.outputNode = None
        self.result: Optional[Dict[str, Any]] = None  # the worker's "done" event, for jobs that make no node
        self.error: Optional[Exception] = None
        self.startTime = time.time()
        self._done = False
        self.timer = makeTimer(POLL_MS, self.poll) if makeTimer else None

    def start(self) -> "PolledJob":
        self.startTime = time.time()
        try:
            if self.prepare:
                self.prepare(self.worker)
            self.worker.start()
        except BaseException:
            self._done = True
            self.worker.cleanup()
            raise
        self.registry.add(self)
        if self.timer is not None:
            self.timer.start()
        return self

    def _dispatch(self) -> None:
        for event in self.worker.poll():
            if self.onEvent:
                self.onEvent(event)

    def poll(self) -> None:
        """One timer tick: forward the new events; finish once the worker has ended."""
        if self._done:
            return
        self._dispatch()
        if self.worker.finished:
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._stopTimer()
        self._dispatch()
        try:
            if self.onFinished:
                self.onFinished(self)
        finally:
            self.worker.cleanup()
            self.registry.discard(self)

    def _stopTimer(self) -> None:
        if self.timer is not None:
            self.timer.stop()

    @property
    def running(self) -> bool:
        return not self._done

    @property
    def cancelling(self) -> bool:
        return self.worker.cancelled and not self._done

    def cancel(self) -> None:
        """Ask the worker to stop and return at once; the polling kills it if it does not stop in
        time, and the finishing step then reports the cancel."""
        self.worker.cancel()

    def close(self, grace: float = CLEANUP_GRACE_S) -> None:
        """Stop the worker now (module cleanup, application exit): at most ``grace`` s, no callbacks."""
        if self._done:
            return
        self._done = True
        self._stopTimer()
        try:
            self.worker.cleanup(grace)
        finally:
            self.registry.discard(self)

    def wait(self) -> None:
        """Block until the worker ends (console use), forwarding its events."""
        self._stopTimer()
        while not self.worker.finished:
            self._dispatch()
            time.sleep(POLL_MS / 1000.0)
        self._finish()

    @property
    def elapsed(self) -> float:
        return time.time() - self.startTime


class WorkerRunner:
    """How the module starts a worker: the Python that runs it, its environment, the timer that polls it.

    The Slicer logic makes one with PythonSlicer, Slicer's start-up environment and a QTimer; tests (and
    any other host) inject their own, e.g. ``sys.executable`` and a fake timer, as SlicerNNUnet injects
    its process runner. Everything the logic starts goes through ``start``.
    """

    def __init__(self, python: str, env: Optional[Dict[str, str]] = None,
                 makeTimer: Optional[Callable[[int, Callable[[], None]], Any]] = None,
                 registry: Optional[JobRegistry] = None):
        self.python, self.env, self.makeTimer, self.registry = python, env, makeTimer, registry

    def start(self, request: WorkerRequest, onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None,
              prepare: Optional[Callable[[WorkerJob], None]] = None) -> PolledJob:
        """A started, polled job (its folder is removed again if preparing or starting it fails)."""
        worker = WorkerJob(request, python=self.python, env=self.env)
        return PolledJob(worker, onEvent, onFinished, makeTimer=self.makeTimer, prepare=prepare,
                         registry=self.registry).start()
