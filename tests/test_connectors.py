"""Connectors: each framework's real package makes a call through a running gateway to a tiny
GGUF model generated here; a remote model's own server is reached directly (protocol test)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import MissingPackage, ModelctlError, NotFound
from tests.live import running
from tests.protocol_servers import FakeOpenAI, serve

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    with ModelManager() as manager:
        manager.sync(only=["llamacpp"])
        manager.update_model_parameters("tiny", max_tokens=4, temperature=0.5)
        with running(manager) as url:
            monkeypatch.setenv("MODELCTL_SERVER", url)
            with ModelManager() as user:  # the person's own process, with its settings
                yield user


def test_openai_sdk(gateway: ModelManager) -> None:
    client = gateway.client("tiny", "openai")
    args = gateway.connector_kwargs("tiny", "openai", temperature=0.0)
    assert args["model"] == "tiny" and args["temperature"] == 0.0 and args["max_tokens"] == 4
    answer = client.chat.completions.create(
        messages=HELLO, **{k: args[k] for k in ("model", "max_tokens", "temperature")}
    )
    assert answer.choices[0].finish_reason == "length"  # max_tokens came through


def test_langchain(gateway: ModelManager) -> None:
    chat = gateway.client("tiny", "langchain", max_tokens=3)
    assert type(chat).__name__ == "ChatOpenAI" and chat.max_tokens == 3
    assert chat.temperature == 0.5  # the model's default, kept
    reply = chat.invoke("hello")
    assert reply.response_metadata["finish_reason"] == "length"  # max_tokens came through


def test_dspy(gateway: ModelManager) -> None:
    lm = gateway.client("tiny", "dspy", cache=False)
    assert type(lm).__name__ == "LM" and lm.model == "openai/tiny"
    outputs = lm("hello")
    assert isinstance(outputs, list) and len(outputs) == 1


def test_litellm(gateway: ModelManager) -> None:
    import litellm

    args = gateway.client("tiny", "litellm")
    assert args["model"] == "openai/tiny" and args["api_base"].endswith("/v1")
    reply = litellm.completion(messages=HELLO, **args)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens > 0


def test_ollama_client(gateway: ModelManager) -> None:
    client = gateway.client("tiny", "ollama")
    args = gateway.connector_kwargs("tiny", "ollama")
    assert args["options"] == {"num_predict": 4, "temperature": 0.5}
    reply = client.chat(model=args["model"], messages=HELLO, options=args["options"])
    assert reply.done and reply.message.role == "assistant" and reply.eval_count > 0


def test_kwargs_import_no_framework(gateway: ModelManager) -> None:
    frameworks = ("openai", "langchain", "dspy", "litellm", "ollama")
    modules = ("openai", "langchain_openai", "dspy", "litellm", "ollama")
    code = (
        "import sys; from modelctl import ModelManager; m = ModelManager()\n"
        f"for f in {frameworks}: m.connector_kwargs('tiny', f)\n"
        f"print(sorted(x for x in {modules} if x in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_direct_to_the_models_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol test: an OpenAI-compatible upstream reached without the gateway."""
    fake = FakeOpenAI(key="sk-test", models=["gpt-4o"])
    with serve(fake) as upstream:
        monkeypatch.setenv("OPENAI_BASE_URL", upstream + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as manager:
            manager.sync(only=["openai"])
            args = manager.connector_kwargs("gpt-4o", "langchain")
            assert args["base_url"] == upstream + "/v1" and args["api_key"] == "sk-test"
            reply = manager.client("gpt-4o", "langchain").invoke("hi")
            assert reply.content == "Hi there!"
            via = manager.connector_kwargs("gpt-4o", "openai", via="gateway")
            assert via["base_url"] == "http://127.0.0.1:8765/v1"


def test_errors_say_what_to_do(gateway: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFound, match="no connector named 'haystack'"):
        gateway.client("tiny", "haystack")
    with pytest.raises(ModelctlError, match="runs in process"):
        gateway.connector_kwargs("tiny", "openai", via="direct")
    with pytest.raises(ModelctlError, match="via must be one of"):
        gateway.connector_kwargs("tiny", "openai", via="carrier-pigeon")
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # as if it were not installed
    with pytest.raises(MissingPackage, match="pip install langchain-openai"):
        gateway.client("tiny", "langchain")
