"""The Ollama, OpenAI-compatible, LM Studio and Anthropic runtimes through the manager and the
scheduler, and (for the last two) through the gateway with the real `openai` client.

Protocol tests: the Ollama daemon, an OpenAI-compatible server, LM Studio and Anthropic's API
are loopback servers that speak their documented APIs (tests/protocol_servers.py): NDJSON and
SSE streams included.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelctl.backends import NotSupported
from modelctl.manager import ModelManager
from modelctl.record.errors import LoadFailed
from tests.protocol_servers import (
    FakeAnthropic,
    FakeLMStudio,
    FakeOllama,
    FakeOpenAI,
    OllamaModel,
    serve,
)

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


def test_ollama_keeps_the_schedulers_keep_alive_on_every_request(ollama: FakeOllama) -> None:
    """The daemon resets its own timer to 5 minutes on a request without keep_alive (as the
    real one does): it would drop the model while modelctl still lists it as loaded."""
    with ModelManager() as m:
        m.sync(only=["ollama"])
        m.load("llama3.2:3b", keep_alive=3600)
        m.chat(MESSAGES, "llama3.2:3b", max_tokens=1)
        list(m.chat(MESSAGES, "llama3.2:3b", stream=True))
        m.complete("Once", "llama3.2:3b")
        m.embed(["ab"], "llama3.2:3b")
        assert ollama.loaded == {"llama3.2:3b": "3600s"}
        m.chat(MESSAGES, "llama3.2:3b", max_tokens=1, keep_alive=-1)  # a request changes it
        assert m.loaded()[0]["keep_alive"] == -1
        m.chat(MESSAGES, "llama3.2:3b", max_tokens=1)
        assert ollama.loaded == {"llama3.2:3b": -1}


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


@pytest.mark.parametrize("v1", [True, False], ids=["rest-api-v1", "older-just-in-time"])
def test_lmstudio_runtime(monkeypatch: pytest.MonkeyPatch, v1: bool) -> None:
    fake = FakeLMStudio(v1=v1)
    with serve(fake) as url:
        monkeypatch.setenv("LMSTUDIO_URL", url)
        with ModelManager() as m:
            m.sync(only=["lmstudio"])
            state = m.load("lmstudio/qwen2.5-7b-instruct", context=8192)
            assert state["state"] == "loaded" and state["device"] == "local"
            if v1:  # loaded through the REST API, with the context asked for
                assert fake.loaded == {
                    "qwen2.5-7b-instruct": {"model": "qwen2.5-7b-instruct", "context_length": 8192}
                }
            answer = m.chat(MESSAGES, "lmstudio/qwen2.5-7b-instruct", max_tokens=2)
            assert answer["choices"][0]["message"]["content"] == "Hi there"
            chunks = list(m.chat(MESSAGES, "lmstudio/qwen2.5-7b-instruct", stream=True))
            assert (
                "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hi there!"
            )
            vectors = m.embed("abcd", "lmstudio/text-embedding-nomic-embed-text-v1.5")
            assert vectors == [[4.0, 0.25]]
            m.unload(all=True)
            assert fake.loaded == {}  # unloaded in LM Studio too


def test_anthropic_runtime_and_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    import openai

    from tests.live import running

    fake = FakeAnthropic()
    with serve(fake) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", fake.key)
        with ModelManager() as m:
            m.sync(only=["anthropic"])
            claude = "anthropic/claude-sonnet-4-0"
            system = [{"role": "system", "content": "Be brief."}, *MESSAGES]
            answer = m.chat(system, claude, temperature=0.3, stop="END")
            assert answer["choices"][0]["message"]["content"] == "Hello from Claude"
            assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 3,
                                       "total_tokens": 15}  # fmt: skip
            sent = fake.bodies[-1]
            assert sent["system"] == "Be brief." and sent["messages"] == MESSAGES
            assert sent["max_tokens"] == 4096 and sent["stop_sequences"] == ["END"]
            chunks = list(m.chat(MESSAGES, claude, stream=True, max_tokens=50))
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
            assert text == "Hello from Claude" and chunks[-1]["usage"]["completion_tokens"] == 3
            with pytest.raises(NotSupported, match="cannot complete"):
                m.complete("x", claude)
            with running(m) as gateway:
                client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0)
                reply = client.chat.completions.create(model=claude, messages=MESSAGES)
                assert reply.choices[0].message.content == "Hello from Claude"
                streamed = client.chat.completions.create(model=claude, messages=MESSAGES,
                                                          stream=True)  # fmt: skip
                assert "".join(c.choices[0].delta.content or "" for c in streamed) == (
                    "Hello from Claude"
                )
            stats = m.usage_stats(claude)["models"][claude]
            assert stats["requests"] == 5 and stats["errors"] == 1
            assert stats["tokens_in"] == 12 * 4  # the stream's usage came in its last chunk


def test_an_ollama_stream_that_ends_early_is_an_error(ollama: FakeOllama) -> None:
    """A daemon whose answer stream stops before `done: true` (it crashed, or a proxy cut it):
    the request ends with an error that says so, not with a short answer taken for whole."""
    from modelctl.record.errors import BackendError

    with ModelManager() as m:
        m.sync(only=["ollama"])
        ollama.cut_streams = True
        with pytest.raises(BackendError, match="ended its stream before the answer was complete"):
            list(m.chat(MESSAGES, "llama3.2:3b", stream=True))
        ollama.cut_streams = False
        assert list(m.chat(MESSAGES, "llama3.2:3b", stream=True))[-1]["choices"][0]["finish_reason"]
