"""Workers: each loaded local model in a child process that modelctl starts, watches and stops.

Two runtimes start a worker:

- modelctl's own (`python -m modelctl.runtime.worker`) for a backend that loads models in
  process (GGUF through llama.cpp, Hugging Face through transformers): the supervisor binds a
  loopback socket and hands its descriptor over, so no port is ever raced for;
- `command`: any OpenAI-compatible server, started from a per-model template, as llama-swap
  does: `python -m llama_cpp.server --model {path} --port {port}`, `llama-server -m {path}
  --port {port}`, `vllm serve {path} --port {port}`. A template comes from a settings file
  (`[commands.MODEL]`), never from a record, which clients of the HTTP API may write;
  placeholders: {path} {port} {host} {model} {name} {context}.

A worker is ready when its readiness path answers 200 (modelctl's: /health; a command's:
`ready`, /v1/models by default), within `load_timeout`; a worker that exits first is a failed
load that says its exit status and its log's last lines. Its process group is its own: a stop
sends the stop signal to the whole group, waits `grace` seconds, then kills what is left, every
descendant included, so memory returns to the machine in full. A worker that exits on its own
(a crash, the kernel's out-of-memory killer) is reported through `on_exit`: the scheduler
marks the model failed, its requests end with `WorkerFailed`, the next request reloads it.

Each worker's output goes to `<home>/logs/workers/<model>.log` (the previous run's is kept as
`.log.1`), read back by `log_tail` (`modelctl logs MODEL`, /api/v1/models/{id}/logs).
Memory is the resident set of the worker's process tree, measured by `resident()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.backends._openai_wire import OpenAIWireHandle
from modelctl.record import errors
from modelctl.record.errors import BackendError, Cancelled, LoadFailed, ModelctlError, WorkerFailed

if TYPE_CHECKING:
    from modelctl.backends import Backend, Handle
    from modelctl.record.model import Model

__all__ = ["CommandSpec", "Supervisor", "WorkerHandle", "WorkerProcess"]

log = logging.getLogger("modelctl.workers")

LOG_LIMIT = 8 << 20  # a log past this size at a start is kept as .log.1 and begun again
COMMAND_KEYS = {"command", "ready", "parallel", "stop_signal", "load_timeout", "name", "env"}


@dataclass(frozen=True)
class CommandSpec:
    """How to run one model with a command: an OpenAI-compatible server on {port}."""

    command: str
    ready: str = "/v1/models"
    parallel: int | None = 1  # requests it takes at once; None: the server queues its own
    stop_signal: str = "SIGTERM"
    load_timeout: float | None = None
    name: str | None = None  # the model's name in requests (default: the model's id)
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: Any, where: str) -> CommandSpec:
        """From a template string, or a table with `command` and optional keys."""
        if isinstance(value, str):
            value = {"command": value}
        if not isinstance(value, dict) or not isinstance(value.get("command"), str):
            raise errors.ConfigError(
                f"{where}: a command is a template string, or a table with `command`",
                hint='command = "python -m llama_cpp.server --model {path} --port {port}"',
            )
        unknown = set(value) - COMMAND_KEYS
        if unknown:
            raise errors.ConfigError(
                f"{where}: unknown keys {', '.join(sorted(unknown))}",
                hint=f"known: {', '.join(sorted(COMMAND_KEYS))}",
            )
        try:
            shlex.split(value["command"])
            parallel = int(value.get("parallel", 1))
            stop = str(value.get("stop_signal", "SIGTERM")).upper()
            signal.Signals[stop if stop.startswith("SIG") else "SIG" + stop]
            timeout = value.get("load_timeout")
            env = value.get("env") or {}
            if not isinstance(env, dict):
                raise ValueError("env must be a table of NAME = value")
        except (ValueError, KeyError) as exc:
            raise errors.ConfigError(f"{where}: {exc}") from None
        return cls(
            command=value["command"], ready=str(value.get("ready", "/v1/models")),
            parallel=parallel if parallel > 0 else None, stop_signal=stop,
            load_timeout=float(timeout) if timeout else None, name=value.get("name"),
            env=tuple((str(k), str(v)) for k, v in env.items()),
        )  # fmt: skip


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exited with status {code}"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._") or "model"


class WorkerProcess:
    """One started worker: its process, port, log, and the thread that waits for its exit."""

    def __init__(
        self,
        model_id: str,
        argv: list[str],
        *,
        port: int,
        log_path: Path,
        ready: str,
        stop_signal: str = "SIGTERM",
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        error_file: Path | None = None,
    ) -> None:
        self.model_id, self.argv, self.port = model_id, argv, port
        self.log_path, self.ready_path = log_path, ready
        self.stop_signal = signal.Signals[stop_signal]
        self.error_file = error_file
        self.stopping = False
        self.exited = threading.Event()
        self.vram: int | None = None  # NVIDIA GPU memory at the last measure; None: no NVML
        self.on_exit: Callable[[WorkerProcess], None] | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists() and log_path.stat().st_size > LOG_LIMIT:
            log_path.replace(log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as out:
            out.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(argv)}\n".encode()
            )
            out.flush()
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, pass_fds=pass_fds, start_new_session=True,  # its own process group
            )  # fmt: skip
        self.pid = self.process.pid
        self.started = time.monotonic()
        self._watcher = threading.Thread(
            target=self._wait, name=f"modelctl-worker-{model_id}", daemon=True
        )
        self._watcher.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.exited.is_set() else None

    def _wait(self) -> None:
        """The watcher: waits for the process's exit, then tells the supervisor once."""
        self.process.wait()
        self.exited.set()
        with open(self.log_path, "ab") as out:
            ended = describe_exit(self.process.returncode)
            if self.stopping:
                ended = f"stopped ({ended})"
            out.write(f"--- {time.strftime('%H:%M:%S')} {ended}\n".encode())
        if not self.stopping and self.on_exit is not None:
            try:
                self.on_exit(self)
            except Exception:
                log.exception("reporting the exit of %s's worker failed", self.model_id)

    def why(self) -> str:
        """Its exit status and its log's last lines, in one message."""
        tail = [
            line for line in log_tail(self.log_path, 6)
            if line.strip() and not line.startswith("---")
        ]  # fmt: skip
        last = f"; its log ends: {' | '.join(tail[-3:])[-400:]}" if tail else ""
        return f"the worker (pid {self.pid}) {describe_exit(self.returncode)}{last}"

    def wait_ready(
        self, timeout: float, probe: Callable[[], bool], cancel: threading.Event | None = None
    ) -> None:
        """Until `probe()` says ready; LoadFailed when the worker exits first or time runs out;
        Cancelled, the worker stopped, once `cancel` is set (nobody waits for the load)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited.is_set():
                raise self._load_error()
            if cancel is not None and cancel.is_set():
                self.stop(grace=2)
                raise Cancelled(f"{self.model_id}: the load was cancelled, the worker stopped")
            try:
                if probe():
                    return
            except Exception:  # not listening yet, or answering 503 while it loads
                pass
            if time.monotonic() > deadline:
                self.stop(grace=2)
                raise LoadFailed(
                    f"{self.model_id}: the worker was not ready after {timeout:g} s",
                    hint=f"raise load_timeout, or see `modelctl logs {self.model_id}`",
                )
            self.exited.wait(0.05)

    def _load_error(self) -> ModelctlError:
        if self.error_file is not None and self.error_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                said = json.loads(self.error_file.read_text())
                kind = getattr(errors, str(said.get("error")), None)
                if not (isinstance(kind, type) and issubclass(kind, ModelctlError)):
                    kind = LoadFailed
                if kind.__init__ is not ModelctlError.__init__:
                    kind = BackendError
                return kind(str(said.get("message")), hint=said.get("hint"))
        return LoadFailed(f"{self.model_id}: {self.why()}", hint=f"modelctl logs {self.model_id}")

    def stop(self, grace: float = 5.0) -> int | None:
        """The stop signal to its process group, then SIGKILL to whatever is left after `grace`
        seconds, descendants that left the group included. Returns the exit status."""
        self.stopping = True
        import psutil

        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            family = []
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, self.stop_signal)
            if not self.exited.wait(grace):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.exited.wait(5)
        for child in family:  # a grandchild in a session of its own outlives the group
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # what the group still holds
        self._watcher.join(timeout=5)
        return self.returncode

    def resident(self) -> int:
        """Bytes the worker and every process it started hold: their resident memory, plus
        the NVIDIA GPU memory NVML reports for them where there is a GPU (`vram`)."""
        import psutil

        from modelctl.fit.hardware import gpu_memory_of

        try:
            root = psutil.Process(self.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in family:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.vram = gpu_memory_of({p.pid for p in family})
        return total + (self.vram or 0)


def log_tail(path: Path, lines: int = 100) -> list[str]:
    """The last `lines` lines of a log file (the end only is read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max(4096, lines * 400)))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []


class WorkerHandle(OpenAIWireHandle):
    """A model loaded in a worker: requests go to it over loopback HTTP; a worker that exits
    under a request ends it with `WorkerFailed`, which names the exit status."""

    context: int | None = None
    embedding: bool | None = None

    def __init__(
        self, worker: WorkerProcess, model_id: str, *, name: str, parallel: int | None,
        device: str = "cpu", stop_grace: float = 5.0,
    ) -> None:  # fmt: skip
        from modelctl.backends._http import AsyncHttp, Http

        self.worker, self.model_id, self.name = worker, model_id, name
        self.parallel, self.device, self.stop_grace = parallel, device, stop_grace
        label = f"{model_id}'s worker"
        self.http = Http(label, worker.url + "/v1", timeout=None)
        self.ahttp = AsyncHttp(label, worker.url + "/v1", headers={}, timeout=10)
        self.memory = worker.resident()

    @property
    def process(self) -> WorkerProcess:
        return self.worker

    def resident(self) -> int:
        return self.worker.resident()

    def _failed(self, exc: ModelctlError) -> ModelctlError:
        """A worker that exited under the request: WorkerFailed with why; else `exc` itself."""
        if type(exc) is BackendError and self.worker.exited.wait(1.0):
            return WorkerFailed(
                f"{self.model_id}: {self.worker.why()}",
                hint=f"the next request loads it again; `modelctl logs {self.model_id}` has more",
            )
        return exc

    async def _afailed(self, exc: ModelctlError) -> ModelctlError:
        import asyncio

        if type(exc) is not BackendError:
            return exc
        for _ in range(20):  # the exit is seen within a second of the dropped connection
            if self.worker.exited.is_set():
                break
            await asyncio.sleep(0.05)
        return self._failed(exc)

    def _sync(self, call: Callable[[], Any]) -> Any:
        try:
            answer = call()
        except ModelctlError as exc:
            raise self._failed(exc) from None
        return self._chunks(answer) if isinstance(answer, Iterator) else answer

    def _chunks(self, chunks: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from chunks
        except ModelctlError as exc:
            raise self._failed(exc) from None

    async def _achunks(self, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for chunk in chunks:
                yield chunk
        except ModelctlError as exc:
            raise await self._afailed(exc) from None
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        return self._sync(
            lambda: super(WorkerHandle, self).chat(messages, stream=stream, **options)
        )

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        return self._sync(
            lambda: super(WorkerHandle, self).complete(prompt, stream=stream, **options)
        )

    def embed(self, inputs: list[str]) -> list[list[float]]:
        return self._sync(lambda: super(WorkerHandle, self).embed(inputs))

    async def _acall(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            answer = await method(*args, **kwargs)
        except ModelctlError as exc:
            raise await self._afailed(exc) from None
        return self._achunks(answer) if isinstance(answer, AsyncIterator) else answer

    async def achat(
        self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any
    ) -> Any:
        return await self._acall(super().achat, messages, stream=stream, **options)

    async def acomplete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        return await self._acall(super().acomplete, prompt, stream=stream, **options)

    async def aembed(self, inputs: list[str]) -> list[list[float]]:
        return await self._acall(super().aembed, inputs)

    def close(self) -> None:
        """Stop the worker: its whole process tree; its memory goes back to the machine."""
        self.worker.stop(self.stop_grace)
        self.http.close()


class Supervisor:
    """Starts a worker for every load of a local model, and stops it on unload."""

    def __init__(
        self,
        *,
        logs: Path,
        home: Path | None = None,
        own: bool = True,
        commands: dict[str, Any] | None = None,
        load_timeout: float = 300.0,
        stop_grace: float = 5.0,
    ) -> None:
        self.logs, self.home, self.own = logs, home, own
        self.commands = commands or {}
        self.load_timeout, self.stop_grace = load_timeout, stop_grace
        self.on_exit: Callable[[str, WorkerHandle, str], None] | None = None
        self._lock = threading.Lock()  # guards `workers` only; never held across I/O
        self.workers: dict[int, WorkerHandle] = {}

    def command_for(self, model: Model) -> CommandSpec | None:
        """The model's command, from the settings only: a record's metadata can be written
        through the HTTP API and by import files, and a command there would run whatever a
        client wrote on this machine."""
        if model.id in self.commands:
            return CommandSpec.parse(self.commands[model.id], f"setting commands.{model.id}")
        return None

    def runs(self, model: Model, backend: Backend) -> bool:
        """Whether a load of `model` starts a worker: a command is set for it, or, with `own`,
        its backend loads models in process (local, loads, has no server of its own)."""
        if self.command_for(model) is not None:
            return True
        if not self.own:
            return False
        kind = backend.kind()
        return kind.local and kind.can_load and not kind.has_server

    def log_path(self, model_id: str) -> Path:
        return self.logs / f"{safe_name(model_id)}.log"

    def log_tail(self, model_id: str, lines: int = 100) -> list[str]:
        return log_tail(self.log_path(model_id), lines)

    def start(
        self,
        model: Model,
        backend: Backend,
        options: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> WorkerHandle:
        """Start a worker for `model` and wait until it is ready; LoadFailed says why not, and
        Cancelled that `cancel` was set meanwhile (the worker is stopped)."""
        options = {k: v for k, v in options.items() if k != "keep_alive"}
        command = self.command_for(model)
        handle = (
            self._start_command(model, command, options, cancel)
            if command is not None
            else self._start_own(model, backend, options, cancel)
        )
        with self._lock:
            self.workers[handle.worker.pid] = handle
        handle.worker.on_exit = self._exited
        if handle.worker.exited.is_set():  # it died between ready and here
            self._exited(handle.worker)
        return handle

    def _exited(self, worker: WorkerProcess) -> None:
        with self._lock:
            handle = self.workers.pop(worker.pid, None)
        if handle is not None and self.on_exit is not None:
            self.on_exit(handle.model_id, handle, worker.why())

    def _start_own(
        self,
        model: Model,
        backend: Backend,
        options: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> WorkerHandle:
        import httpx

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        specs = self.logs / "specs"
        specs.mkdir(parents=True, exist_ok=True)
        spec_path = specs / f"{safe_name(model.id)}-{port}.json"
        error_file = Path(f"{spec_path}.error")
        error_file.unlink(missing_ok=True)
        spec = {
            "model": model.to_dict(),
            "backend": backend.instance, "entry": backend.name, "options": options,
            "home": str(self.home) if self.home else None,
        }  # fmt: skip
        spec_path.write_text(json.dumps(spec, default=str))
        argv = [
            sys.executable, "-m", "modelctl.runtime.worker", str(spec_path),
            "--fd", str(sock.fileno()), "--parent", str(os.getpid()),
        ]  # fmt: skip
        try:
            worker = WorkerProcess(
                model.id, argv, port=port, log_path=self.log_path(model.id), ready="/health",
                pass_fds=(sock.fileno(),), error_file=error_file,
            )  # fmt: skip
        finally:
            sock.close()  # the worker has its own copy
        health: dict[str, Any] = {}

        def probe() -> bool:
            # the socket listens already: the request waits in its backlog until the worker
            # serves (ready at once), and fails at once if the worker exits
            answer = httpx.get(worker.url + "/health", timeout=httpx.Timeout(2.0, connect=1.0))
            if answer.status_code == 200:
                health.update(answer.json())
                return True
            return False

        try:
            worker.wait_ready(self.load_timeout, probe, cancel)
        finally:
            spec_path.unlink(missing_ok=True)
            error_file.unlink(missing_ok=True)
        handle = WorkerHandle(
            worker, model.id, name=model.id, parallel=health.get("parallel", 1),
            device=health.get("device") or "cpu", stop_grace=self.stop_grace,
        )  # fmt: skip
        handle.reloads_for = tuple(health.get("reloads_for") or ())
        handle.context, handle.embedding = health.get("context"), health.get("embedding")
        handle.gives_logprobs = bool(health.get("logprobs"))
        return handle

    def _start_command(
        self,
        model: Model,
        command: CommandSpec,
        options: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> WorkerHandle:
        import httpx

        port = _free_port()
        values = {
            "path": model.file or model.location or "", "port": port, "host": "127.0.0.1",
            "model": model.id, "name": command.name or model.id,
            "context": options.get("context") or model.context_length or 4096,
        }  # fmt: skip
        try:
            argv = [part.format(**values) for part in shlex.split(command.command)]
        except (KeyError, IndexError, ValueError) as exc:
            raise LoadFailed(
                f"{model.id}: the command template has an unknown placeholder {exc}",
                hint="placeholders: " + " ".join("{" + k + "}" for k in values),
            ) from None
        env = {**os.environ, **dict(command.env)}
        try:
            worker = WorkerProcess(
                model.id, argv, port=port, log_path=self.log_path(model.id),
                ready=command.ready, stop_signal=command.stop_signal, env=env,
            )  # fmt: skip
        except OSError as exc:
            raise LoadFailed(
                f"{model.id}: cannot start {argv[0]!r}: {exc.strerror or exc}",
                hint="is the command installed, and on PATH?",
            ) from None

        def probe() -> bool:
            return httpx.get(worker.url + command.ready, timeout=1.0).status_code == 200

        worker.wait_ready(command.load_timeout or self.load_timeout, probe, cancel)
        handle = WorkerHandle(
            worker, model.id, name=command.name or model.id, parallel=command.parallel,
            stop_grace=self.stop_grace,
        )  # fmt: skip
        handle.reloads_for = ("context",)  # {context} in its command: another one restarts it
        handle.context = values["context"]
        return handle

    def close(self) -> None:
        """Stop every worker still running (the scheduler unloads them first, in order)."""
        with self._lock:
            handles, self.workers = list(self.workers.values()), {}
        for handle in handles:
            handle.worker.stop(self.stop_grace)


class Launcher:
    """A backend as the scheduler sees it when its models run in workers: `load` starts one."""

    cancellable = True  # a worker being started can be stopped: see `Scheduler.abandon`

    def __init__(self, supervisor: Supervisor, backend: Backend) -> None:
        self.supervisor, self.backend = supervisor, backend

    def load(
        self, model: Model, *, cancel: threading.Event | None = None, **options: Any
    ) -> Handle:
        return self.supervisor.start(model, self.backend, options, cancel)
