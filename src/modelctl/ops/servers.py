"""Single-model servers: `modelctl serve --model M` in a child process, started and stopped
from Python (`manager.start_server(model)`), each an OpenAI- and Ollama-compatible endpoint for
one model, as llama-server or `ollama serve` would be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import ModelctlError

if TYPE_CHECKING:
    from modelctl.config import Settings

__all__ = ["ServerInfo", "start_server", "stop_server"]

_ANNOUNCED = re.compile(r"serving on (http://\S+)")


@dataclass(frozen=True)
class ServerInfo:
    url: str  # OpenAI's clients want url + "/v1"
    port: int
    pid: int
    model: str
    log: str  # where the server writes its log
    process: subprocess.Popen = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["process"]
        return data


def start_server(
    model_id: str, port: int | None = None, *, settings: Settings, timeout: float = 120.0
) -> ServerInfo:
    """Start a server for the registered `model_id` on `port` (a free one if None), with the
    settings' home and database, and wait until it answers."""
    import httpx

    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (the child writes it after we return)
        prefix="modelctl-server-", suffix=".log", delete=False
    )
    command = [sys.executable, "-m", "modelctl", "--home", str(settings.home), "serve",
               "--model", model_id, "--port", str(port or 0), "--no-restore"]  # fmt: skip
    env = {**os.environ, "MODELCTL_DATABASE": str(settings.database)}
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if url is None:
            found = _ANNOUNCED.search(Path(log.name).read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(url + "/health", timeout=2).is_success:
                    port_number = int(url.rsplit(":", 1)[1])
                    return ServerInfo(url, port_number, process.pid, model_id, log.name, process)
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    lines = Path(log.name).read_text().strip().splitlines()
    said = [line for line in lines if line.startswith("error: ")] or lines[-1:] or ["no output"]
    raise ModelctlError(
        f"the server for {model_id} did not start: {said[0].removeprefix('error: ')}",
        hint=f"its log: {log.name}",
    )


def stop_server(server: ServerInfo, *, timeout: float = 30.0) -> int:
    """Stop it (Ctrl-C: it unloads its model first); returns its exit status."""
    import signal

    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            return server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
    return server.process.wait()
