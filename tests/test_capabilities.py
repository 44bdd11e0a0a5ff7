"""Capability detection on generated GGUF files (with and without a chat template and tool
markers, with a vision projector beside one), a Hugging Face config, names, and probes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TOOL_TEMPLATE, TinySpec, write_llama


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "models"
    (folder / "vision").mkdir(parents=True)
    write_llama(folder / "chatty.gguf", TinySpec(name="Chatty"))
    write_llama(folder / "plain.gguf", TinySpec(name="Plain", chat_template=None))
    write_llama(folder / "toolish.gguf", TinySpec(name="Toolish", chat_template=TOOL_TEMPLATE))
    write_llama(folder / "vision" / "seer.gguf", TinySpec(name="Seer"))
    shutil.copy(folder / "plain.gguf", folder / "vision" / "mmproj-seer-f16.gguf")
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        yield m


def test_gguf_metadata(manager: ModelManager) -> None:
    chatty = manager.detect_capabilities("chatty")
    assert "metadata: chat template" in chatty["chat"] and "tools" not in chatty
    assert "chat" not in manager.detect_capabilities("plain")
    plain = manager.detect_capabilities("plain")["completion"]
    assert plain == ["declared", "metadata: llama architecture"]
    tools = manager.detect_capabilities("toolish")["tools"]
    assert any(s.startswith("metadata: chat template mentions") for s in tools)
    assert manager.detect_capabilities("seer")["vision"] == [
        "metadata: vision projector mmproj-seer-f16.gguf"
    ]
    assert manager.supports("toolish", "tools") and not manager.supports("plain", "vision")


def test_hugging_face_config_and_names(manager: ModelManager, tmp_path: Path) -> None:
    folder = tmp_path / "qwen-vl"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"architectures": ["Qwen2VLForConditionalGeneration"], "vision_config": {}}))  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% if tools %}<tool_call>{% endif %}{{ messages }}"}))  # fmt: skip
    manager.add_model({"id": "Qwen/Qwen2-VL-2B-Instruct", "backend": "huggingface",
                       "location": str(folder)})  # fmt: skip
    found = manager.detect_capabilities("Qwen/Qwen2-VL-2B-Instruct")
    tower = "metadata: config: Qwen2VLForConditionalGeneration with a vision tower"
    assert found["vision"][0] == tower
    assert "name: 'vl'" in found["vision"]
    assert found["tools"] == ["metadata: chat template mentions <tool_call>"]
    assert "name: 'instruct'" in found["chat"]
    manager.add_model({"id": "nomic-embed-text", "backend": "ollama"})
    assert manager.detect_capabilities("nomic-embed-text") == {"embeddings": ["name: 'embed'"]}


def test_probing_with_real_requests(manager: ModelManager) -> None:
    found = manager.detect_capabilities("chatty", probe=True)
    assert "probe: answered a request" in found["chat"]
    assert "probe: answered a request" in found["completion"]
    plain = manager.detect_capabilities("plain", probe=True)
    assert "chat" not in plain  # no template: the probe's chat request was refused


def test_show_lists_capabilities_with_sources(manager: ModelManager) -> None:
    result = CliRunner().invoke(app, ["show", "toolish"])
    assert result.exit_code == 0
    assert (
        "can:" in result.stdout
        and "tools" in result.stdout
        and "metadata: chat template" in result.stdout
    )
    data = json.loads(CliRunner().invoke(app, ["show", "toolish", "--json"]).stdout)
    assert "tools" in data["detected_capabilities"]
