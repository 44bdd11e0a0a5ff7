"""`modelctl system`, `fit`, `recommend`, `search` and `list --all` on this machine (no GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.ops.demo import TinySpec, write_llama


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_system() -> None:
    data = json.loads(run("system", "--json").stdout)
    assert data["ram_total"] > 0 and data["cpu_cores"] >= 1
    assert isinstance(data["gpus"], list) and data["disks"]
    text = run("system").stdout
    assert "ram" in text and "free of" in text


def test_fit_catalog_model() -> None:
    data = json.loads(run("fit", "llama3.2:3b", "--memory", "8G", "--json").stdout)
    assert data["fits"] and data["level"] == "fits"
    parts = data["estimate"]
    assert (
        parts["total"]
        == parts["weights"] + parts["kv_cache"] + parts["compute"] + parts["overhead"]
    )
    result = run("fit", "llama3.1:70b", "--memory", "8G", "--context", "32k")
    assert result.exit_code == 7 and "won't fit" in result.stdout and "kv cache" in result.stdout


def test_fit_a_gguf_file_and_a_registered_model(tmp_path: Path) -> None:
    gguf = write_llama(tmp_path / "tiny-q8_0.gguf", TinySpec(dtype="Q8_0"))
    data = json.loads(run("fit", str(gguf), "--json").stdout)
    assert data["estimate"]["basis"] == "gguf file" and data["fits"]
    assert run("add", str(gguf)).exit_code == 0
    data = json.loads(run("fit", "tiny-q8_0", "--context", "256", "--json").stdout)
    assert data["model"] == "tiny-q8_0" and data["estimate"]["context"] == 256


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["fit", "lama3.2:3b"], 3, "did you mean"),
        (["fit", "llama3.2:3b", "--memory", "lots"], 1, "--memory: 'lots' is not a byte size"),
        (["fit", "llama3.2:3b", "--memory", "0"], 1, "--memory must be more than 0"),
        (["fit", "llama3.2:3b", "--context", "0"], 1, "--context must be more than 0"),
        (["fit", "llama3.2:3b", "--kv-type", "f8"], 2, "unknown KV cache type"),
        (["fit", "openai/gpt-4o"], 2, "needs no memory here"),
        (["fit", "/no/such/model.gguf"], 2, "GGUF file not found"),
        (["recommend", "--priority", "specialized"], 2, "speed, balanced or quality"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: int, words: str) -> None:
    result = run(*args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert "Traceback" not in result.output


def test_recommend() -> None:
    data = json.loads(run("recommend", "--memory", "8G", "--priority", "quality", "--json").stdout)
    assert data["model"] and data["compatibility"]["fits"] and data["runners_up"]
    code = json.loads(run("recommend", "-m", "16G", "--task", "code", "--json").stdout)
    assert code["model"]
    nothing = run("recommend", "--memory", "100M")
    assert nothing.exit_code == 1 and "no recommendation" in nothing.stdout
    here = run("recommend")
    assert here.exit_code == 0 and "runners-up" in here.stdout


def test_search() -> None:
    rows = json.loads(run("search", "qwen3", "--memory", "16G", "--json").stdout)
    assert [r["id"] for r in rows][:2] == ["qwen3:0.6b", "qwen3:1.7b"]
    levels = {r["id"]: r["fit"]["level"] for r in rows}
    assert levels["qwen3:0.6b"] == "fits" and levels["qwen3:32b"] == "won't fit"
    remote = json.loads(run("search", "gpt", "--remote", "--json").stdout)
    assert remote and all(r["fit"]["level"] == "remote" for r in remote)
    assert "FIT" in run("search", "embed").stdout
    missing = run("search", "zzz-nothing")
    assert missing.exit_code == 1 and "nothing in the catalog" in missing.stderr


def test_list_all() -> None:
    assert run("add", "ollama:llama3.2:3b").exit_code == 0
    assert run("add", "openai/gpt-4o").exit_code == 0
    data = json.loads(run("list", "--all", "--json").stdout)
    fits = {m["id"]: m["fit"]["level"] for m in data["models"]}
    assert fits["openai/gpt-4o"] == "remote" and fits["llama3.2:3b"] != "-"
    catalog_ids = {e["id"] for e in data["catalog"]}
    assert "llama3.2:3b" not in catalog_ids and "qwen2.5:7b" in catalog_ids
    text = run("list", "--all").stdout
    assert "registered" in text and "catalog" in text and "FIT" in text
