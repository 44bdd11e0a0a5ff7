"""R6: a remote backend that dies or hangs in the middle of a request.

Protocol test: the backend is an OpenAI-compatible loopback server (tests/protocol_servers.py)
that misbehaves on purpose: it drops the connection before answering or in the middle of a
stream, ends a stream early but cleanly, sends something that is not JSON, or goes silent before
or during its answer. Each fault is sent through the gateway (OpenAI and Ollama routes, streamed
and not) and through the Python library. Every request must end with a clear error well before
the client gives up (`read_timeout` is 1 s here), and the next request must be served.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelctl.manager import ModelManager
from modelctl.record.errors import BackendError
from tests.live import running
from tests.protocol_servers import FakeOpenAI, Handler, serve
from tests.reliability.conftest import scale

FAULTS = ("reset", "cut", "short", "garbage", "hang", "stall")
MESSAGES = [{"role": "user", "content": "hello"}]
CLIENT_LIMIT = 15.0  # the client's own timeout: a request still open then has hung


class FaultyOpenAI(FakeOpenAI):
    """FakeOpenAI with one fault for the inference requests while `fault` is set."""

    def __init__(self) -> None:
        super().__init__(key="sk-test", models=["gpt-4o"])
        self.fault: str | None = None
        self.release = threading.Event()  # ends every hang at teardown

    def infer(self, h: Handler, path: str, body: dict[str, Any]) -> None:
        fault = self.fault
        if fault is None:
            return super().infer(h, path, body)
        h.close_connection = True
        if fault == "reset":
            return _drop(h)
        if fault == "hang":
            self.release.wait(60)
            return _drop(h)
        if fault == "garbage":
            if body.get("stream"):
                return _chunks(h, [b"data: {not json\n\n"], end=True)
            payload = b"<html>upstream error</html>"
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return None
        first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                              "finish_reason": None}]}  # fmt: skip
        if not body.get("stream"):  # a body promised and cut off, or never finished
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "400")
            h.end_headers()
            h.wfile.write(b'{"id": "c", "object": "chat.completion", "choi')
            h.wfile.flush()
            if fault == "stall":
                self.release.wait(60)
            return _drop(h)
        piece = f"data: {json.dumps(first)}\n\n".encode()
        if fault == "short":
            return _chunks(h, [piece], end=True)
        _chunks(h, [piece], end=False)
        if fault == "stall":
            self.release.wait(60)
        return _drop(h)


def _chunks(h: Handler, pieces: list[bytes], *, end: bool) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for data in pieces:
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    if end:
        h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def _drop(h: Handler) -> None:
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyOpenAI]:
    fake = FaultyOpenAI()
    with serve(fake) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("MODELCTL_READ_TIMEOUT", "1")
        monkeypatch.setenv("MODELCTL_HTTP_TIMEOUT", "2")
        try:
            yield fake
        finally:
            fake.release.set()


def _gateway_call(client: httpx.Client, route: str, stream: bool) -> tuple[str, str]:
    """(how the request ended: 'error' or 'ok', the error's text) through one API route."""
    if route == "openai":
        url, payload = "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}
    else:
        url, payload = "/api/chat", {"model": "gpt-4o", "messages": MESSAGES}
    payload["stream"] = stream
    with client.stream("POST", url, json=payload) as response:
        if response.status_code != 200:
            data = json.loads(response.read())
            message = data["error"]["message"] if route == "openai" else data["error"]
            assert response.status_code in (502, 503, 504), (response.status_code, data)
            return "error", message
        lines = [line for line in response.iter_lines() if line.strip()]
    events = [json.loads(line.removeprefix("data:")) for line in lines if line != "data: [DONE]"]
    errors = [e["error"] for e in events if "error" in e]
    if errors:  # a stream that broke: its last event says why
        assert "error" in events[-1]
        return "error", errors[-1]["message"] if route == "openai" else errors[-1]
    return "ok", ""


def test_a_backend_that_dies_or_hangs_ends_each_request_with_an_error_in_bounded_time(
    backend: FaultyOpenAI, figures
) -> None:
    rounds = scale(1, 5)
    slowest = 0.0
    ended = hung = served_after = 0
    with ModelManager() as manager:
        manager.sync(only=["openai"])
        with running(manager, restore=False) as url:
            client = httpx.Client(base_url=url, timeout=CLIENT_LIMIT)
            for _ in range(rounds):
                for fault in FAULTS:
                    for route in ("openai", "ollama"):
                        for stream in (False, True):
                            backend.fault = fault
                            started = time.monotonic()
                            try:
                                outcome, message = _gateway_call(client, route, stream)
                            except httpx.TimeoutException:
                                hung += 1
                                continue
                            finally:
                                backend.fault = None
                            slowest = max(slowest, time.monotonic() - started)
                            assert outcome == "error", (fault, route, stream)
                            assert "openai" in message, message  # it names the backend
                            ended += 1
                            outcome, _ = _gateway_call(client, route, stream)
                            served_after += outcome == "ok"
            client.close()
        library = 0
        for fault in FAULTS:  # the Python library, in process
            for stream in (False, True):
                backend.fault = fault
                started = time.monotonic()
                with pytest.raises(BackendError):
                    answer = manager.chat(MESSAGES, "gpt-4o", stream=stream)
                    if stream:
                        list(answer)
                backend.fault = None
                slowest = max(slowest, time.monotonic() - started)
                library += 1
                assert manager.chat(MESSAGES, "gpt-4o")["choices"][0]["message"]["content"]
    total = rounds * len(FAULTS) * 4
    figures(
        "R6 backend faults", faults=len(FAULTS), gateway_requests=total,
        ended_with_an_error=ended, hung=hung, next_request_served=served_after,
        library_requests=library, slowest_error_s=round(slowest, 2),
    )  # fmt: skip
    assert (ended, hung, served_after) == (total, 0, total)
    assert slowest < CLIENT_LIMIT  # the library's calls too ended long before a client gives up
