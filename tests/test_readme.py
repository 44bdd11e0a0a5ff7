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


SERVER = "http://127.0.0.1:8765"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_serving_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`modelctl demo`, then (with a real server standing in for `modelctl serve`) every curl
    and modelctl line and the `openai` example, against the server's real address."""
    import json
    import subprocess

    from modelctl.manager import ModelManager
    from tests.live import running

    setup, calls = [b for b in blocks("sh") if "modelctl serve" in b or "curl " in b]
    lines = [shlex.split(line, comments=True) for line in setup.splitlines() + calls.splitlines()]
    lines = [args for args in lines if args]
    assert lines[0] == ["modelctl", "demo"] and lines[1] == ["modelctl", "serve"]
    runner = CliRunner()
    assert runner.invoke(app, ["demo"]).exit_code == 0
    (code,) = [b for b in blocks("python") if SERVER in b]
    with ModelManager() as manager, running(manager) as url:
        monkeypatch.setenv("MODELCTL_SERVER", url)
        for args in lines[2:]:
            args = [a.replace(SERVER, url) for a in args]
            if args[0] == "curl":
                done = subprocess.run(args, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0 and done.stdout, args
                if not args[-1].endswith("/metrics"):
                    assert "error" not in json.loads(done.stdout), done.stdout
                else:
                    assert "modelctl_requests_total" in done.stdout
            else:
                assert args[0] == "modelctl"
                result = runner.invoke(app, args[1:])
                assert result.exit_code == 0, f"{args}: {result.stderr or result.output}"
        exec(compile(code.replace(SERVER, url), "README.md", "exec"), {})


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
    from modelctl.ops.demo import TinySpec, write_llama

    (tmp_path / "models").mkdir()
    write_llama(tmp_path / "models" / "tiny.gguf", TinySpec())
    examples = [b for b in blocks("python") if SERVER not in b]
    assert len(examples) == 2
    for code in examples:
        code = code.replace("/tmp/modelctl-readme", str(tmp_path / "readme-home"))
        code = code.replace("/tmp/models/tiny.gguf", str(tmp_path / "models" / "tiny.gguf"))
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        manager = namespace.get("manager")
        if manager is not None:
            manager.close()
