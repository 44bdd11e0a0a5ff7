"""The Ollama and OpenAI-compatible runtimes through the manager and the scheduler.

Protocol tests: the Ollama daemon and an OpenAI-compatible server are loopback servers that
speak their documented APIs (tests/protocol_servers.py): NDJSON and SSE streams included.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelctl.manager import ModelManager
from modelctl.scheduler import LoadFailed
from tests.protocol_servers import FakeOllama, FakeOpenAI, OllamaModel, serve

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def ollama(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    fake = FakeOllama(models={"llama3.2:3b": OllamaModel("llama3.2:3b")})
    with serve(fake) as url:
        monkeypatch.setenv("OLLAMA_HOST", url)
        yield fake


def test_ollama_runtime(ollama: FakeOllama) -> None:
    with ModelManager() as m:
        m.sync(only=["ollama"])
        state = m.load("llama3.2:3b", keep_alive=600, context=8192)
        assert state["device"] == "ollama" and ollama.loaded == {"llama3.2:3b": "600s"}
        running = m.backend("ollama").running()  # the daemon's own view: /api/ps
        assert [r["name"] for r in running] == ["llama3.2:3b"]
        answer = m.chat(MESSAGES, "llama3.2:3b", max_tokens=3)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"] == "Hello from the"
        assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        chunks = list(m.chat(MESSAGES, "llama3.2:3b", stream=True))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert (
            text == "Hello from the daemon" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
        )
        assert m.complete("Once", "llama3.2:3b")["choices"][0]["text"] == "Hello from the daemon"
        assert m.embed(["ab", "abcd"], "llama3.2:3b") == [[2.0, 1.0, 0.5], [4.0, 1.0, 0.5]]
        sent = [path for _, path, _ in ollama.requests if path == "/api/chat"]
        assert sent  # the request went through the daemon's chat API
        m.unload("llama3.2:3b")
        assert ollama.loaded == {}  # keep_alive 0 told the daemon to let it go


def test_ollama_model_gone_from_the_daemon(ollama: FakeOllama) -> None:
    with ModelManager() as m:
        m.sync(only=["ollama"])
        del ollama.models["llama3.2:3b"]
        with pytest.raises(LoadFailed, match="not found, try pulling it first"):
            m.load("llama3.2:3b")


def test_openai_compatible_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOpenAI(key="sk-test", models=["gpt-4o", "text-embedding-3-small"])
    with serve(fake) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as m:
            m.sync(only=["openai"])
            state = m.load("gpt-4o")
            assert state["device"] == "remote" and state["size"] == 0  # no memory here
            assert (
                m.chat(MESSAGES, "gpt-4o", max_tokens=2)["choices"][0]["message"]["content"]
                == "Hi there"
            )
            chunks = list(m.chat(MESSAGES, "gpt-4o", stream=True))
            assert (
                "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hi there!"
            )
            assert m.complete("x", "gpt-4o")["choices"][0]["text"] == "Hi there!"
            assert m.embed("abc", "text-embedding-3-small") == [[3.0, 0.25]]
            m.registry.add({"id": "openai/gone", "backend": "openai", "refs": {"openai": "gone"}})
            with pytest.raises(LoadFailed, match="does not offer 'gone'"):
                m.load("openai/gone")


def test_openai_without_a_key_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with ModelManager() as m:
        m.registry.add({"id": "openai/gpt-4o", "backend": "openai", "refs": {"openai": "gpt-4o"}})
        with pytest.raises(LoadFailed, match="needs an API key"):
            m.load("openai/gpt-4o")
