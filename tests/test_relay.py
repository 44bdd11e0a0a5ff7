"""The gateway relays an OpenAI-compatible stream (a worker's, or a remote server's) as the
bytes its server sent: no chunk is decoded and encoded again on the way. What the meter needs
(a token per chunk that says something, the time to the first, the usage in the last) is read
from the bytes.

Protocol test: the remote server is a loopback server that speaks OpenAI's API
(tests/protocol_servers.py); its JSON has spaces after its separators, as Python's `json`
writes it, where the gateway's own encoding has none, so a chunk encoded again shows."""

from __future__ import annotations

import json

import httpx
import pytest

from modelctl.backends._http import Relayed
from modelctl.manager import ModelManager
from tests.live import running
from tests.protocol_servers import FakeOpenAI, serve

MESSAGES = [{"role": "user", "content": "hello"}]


def test_a_stream_reaches_the_client_as_its_server_sent_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeOpenAI(key="sk-test", models=["gpt-4o"])
    with serve(fake) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as m:
            m.sync(only=["openai"])
            model_id = m.registry.resolve("gpt-4o")
            with running(m) as gateway:
                body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
                with httpx.stream(
                    "POST", f"{gateway}/v1/chat/completions", json=body, timeout=30
                ) as answer:
                    assert answer.status_code == 200
                    received = [line for line in answer.iter_lines() if line]
            (row,) = m.usage.rows(model_id)
    sent = [event.decode().strip() for event in fake.streamed]
    assert received == sent and '"finish_reason": "stop"' in sent[-2]  # spaces and all
    assert row["ok"] and row["tokens_out"] == 3 and row["ttft"] is not None


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_a_relayed_chunk_is_read_from_its_bytes(separators: tuple[str, str]) -> None:
    def relayed(chunk: dict[str, object]) -> Relayed:
        return Relayed(json.dumps(chunk, separators=separators).encode())

    token = relayed({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    assert token.says_something and not token.finishes and token.usage is None
    empty = relayed({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert not empty.says_something
    quoted = relayed({"choices": [{"text": 'say "finish_reason": "stop"', "finish_reason": None}]})
    assert quoted.says_something and not quoted.finishes  # quotes inside a text are escaped
    call = relayed({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1"}]}}]})
    assert call.says_something
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    last = relayed({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": usage})
    assert last.finishes and last.usage == usage and not last.says_something
