"""Install jobs: a pull runs in a thread, reports progress, and can be cancelled.

Cancelling stops the download at its next progress report; a partial download stays where the
backend keeps it (resumed by the next pull), and nothing is marked installed. A job that ends
done or failed says so on the manager's events (`model-changed`); a cancelled one changed nothing.
"""

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelctl.backends import Progress
from modelctl.manager import ModelManager
from modelctl.record.errors import Cancelled, ModelctlError, NotFound
from modelctl.server.errors import classify

__all__ = ["InstallJob", "Job", "Jobs"]

FINISHED = ("done", "failed", "cancelled")
EVENTS_KEPT = 64  # the latest progress of a job: a multi-gigabyte download reports thousands


@dataclass
class Job:
    id: str
    model: str
    options: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed | cancelled
    status: str = "queued"  # the backend's words for the current step
    completed: int | None = None
    total: int | None = None
    error: str | None = None
    code: str | None = None  # the error's code, as the HTTP APIs report it
    http_status: int | None = None
    result: str | None = None  # the registered model's id
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: bool = False
    events: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=EVENTS_KEPT), repr=False
    )
    sequence: int = 0  # events ever reported; followers count by it

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "state": self.state,
            "status": self.status,
            "completed": self.completed,
            "total": self.total,
            "error": self.error,
            "code": self.code,
            "result": self.result,
            "created": self.created,
            "finished": self.finished,
        }


class InstallJob(BaseModel):
    """A job as the API answers it (`Job.to_dict`), for the OpenAPI document."""

    id: str
    model: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    status: str = Field(description="the backend's words for the current step")
    completed: int | None
    total: int | None
    error: str | None
    code: str | None
    result: str | None = Field(description="the installed model's id")
    created: float
    finished: float | None


class Jobs:
    """The server's install jobs, newest last; finished ones are kept (up to `keep`)."""

    def __init__(self, manager: ModelManager, *, keep: int = 100) -> None:
        self.manager = manager
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()

    def start(self, model: str, **options: Any) -> Job:
        with self._cond:
            job = Job(id=f"job-{next(self._ids)}", model=model, options=options)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in FINISHED]
            for old in finished[: max(0, len(finished) - self.keep)]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job,), name=job.id, daemon=True).start()
        return job

    def _update(self, job: Job, **changes: Any) -> None:
        with self._cond:
            for key, value in changes.items():
                setattr(job, key, value)
            job.events.append(job.to_dict())
            job.sequence += 1
            self._cond.notify_all()

    def _run(self, job: Job) -> None:
        self._update(job, state="running", status="starting")
        try:
            end = self._install(job)
            try:
                if end["state"] != "cancelled":  # a cancelled install changed nothing
                    change = "installed" if end["state"] == "done" else "install-failed"
                    self._announce(end.get("result") or job.model, change)
            finally:  # whatever the announcement does, a follower's wait ends
                self._update(job, finished=time.time(), **end)
        finally:
            self.manager.registry.store.close()  # this thread's connection

    def _install(self, job: Job) -> dict[str, Any]:
        """Run the install; returns how its job ends (the job's fields), never raises."""

        def progress(step: Progress) -> None:
            if job.cancel_requested:
                raise Cancelled(f"install of {job.model} cancelled")
            self._update(job, status=step.status, completed=step.completed, total=step.total)

        try:
            model = self.manager.install_model(job.model, progress=progress, **job.options)
        except Cancelled as exc:
            return {"state": "cancelled", "status": "cancelled", "error": exc.message,
                    "code": "cancelled", "http_status": 409}  # fmt: skip
        except ModelctlError as exc:
            text = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            status, code = classify(exc)
            return {"state": "failed", "status": "failed", "error": text, "code": code,
                    "http_status": status}  # fmt: skip
        except Exception as exc:
            # a bug, or a library's surprise: the job says so, the server lives
            return {"state": "failed", "status": "failed", "code": "internal_error",
                    "error": f"{type(exc).__name__}: {exc}", "http_status": 500}  # fmt: skip
        return {"state": "done", "status": "success", "result": model.id}

    def _announce(self, model: str, change: str) -> None:
        """`model-changed` (`installed` or `install-failed`) on the manager's events, once an
        install has written what it does and before its job says it has ended: the installed
        model's id, or the reference a failed install was asked for."""
        self.manager.events.emit("model-changed", model=model, change=change)

    def get(self, job_id: str) -> Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no install job {job_id!r}", hint="GET /api/v1/installs lists them")
        return job

    def list(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job.state not in FINISHED:
                job.cancel_requested = True
        return job

    def follow(self, job: Job, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The progress events of `job` until it finishes: the ones still kept (the latest
        EVENTS_KEPT), then each as it comes; a follower that falls behind skips to the latest."""
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda seen=seen: job.sequence > seen or job.state in FINISHED,
                    timeout=None if deadline is None else max(0, deadline - time.monotonic()),
                )
                new = min(job.sequence - seen, len(job.events))
                fresh, seen = list(job.events)[len(job.events) - new :], job.sequence
                over = job.state in FINISHED
            yield from fresh
            if over or (deadline is not None and time.monotonic() >= deadline):
                return

    def wait(self, job: Job) -> Job:
        for _ in self.follow(job):
            pass
        return job

    def close(self) -> None:
        for job in self.list():
            if job.state not in FINISHED:
                job.cancel_requested = True
