"""modelctl's own server, for real, on a loopback port in a thread of the test process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelctl.manager import ModelManager
from modelctl.server import create_app
from modelctl.server.app import listen


@contextmanager
def running(manager: ModelManager, **options: Any) -> Iterator[str]:
    """`create_app(manager, **options)` served by uvicorn; yields its base URL."""
    import uvicorn

    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(manager, **options)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve_process(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`modelctl serve --port 0` in a child process with `env`; returns it and its base URL,
    once it says where it serves (its output goes on into the returned pipe)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "serving on" in line:
            return proc, line.split("serving on ")[1].split()[0]
    raise AssertionError(f"the server did not start: {proc.wait(10)}")
