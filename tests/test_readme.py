"""Every example in the README runs: the console commands in order, and the Python block."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_console_examples_run_in_order(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "readme"
    (work / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "models.json", work / "examples" / "models.json")
    monkeypatch.chdir(work)
    commands = [
        line[2:]
        for block in blocks("console")
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    assert len(commands) > 15
    runner = CliRunner()
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "modelctl"
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, f"{command}: {result.stderr or result.output}"


def test_python_examples_run(tmp_path: Path) -> None:
    from modelctl.demo import TinySpec, write_llama

    (tmp_path / "models").mkdir()
    write_llama(tmp_path / "models" / "tiny.gguf", TinySpec())
    examples = blocks("python")
    assert len(examples) == 2
    for code in examples:
        code = code.replace("/tmp/modelctl-readme", str(tmp_path / "readme-home"))
        code = code.replace("/tmp/models/tiny.gguf", str(tmp_path / "models" / "tiny.gguf"))
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        manager = namespace.get("manager")
        if manager is not None:
            manager.close()
