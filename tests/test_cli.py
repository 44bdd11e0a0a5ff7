"""The command line: through Typer's runner, and as a real subprocess of the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.registry import Registry

EXAMPLES = Path(__file__).parent.parent / "examples" / "models.json"
SCRIPT = Path(sys.executable).parent / "modelctl"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def loaded(isolated: Path) -> Path:
    result = run("import", str(EXAMPLES))
    assert result.exit_code == 0, result.stderr
    return isolated


def registry_of(home: Path) -> Registry:
    return Registry.open(home / "registry.sqlite")


def test_list_table_and_filters(loaded: Path) -> None:
    out = run("list").stdout
    assert "llama3.2:3b" in out and "openai/gpt-4o" in out and "INSTALLED" in out
    assert "128k" in out and "128,000" in out  # 131072 and 128000 tokens, told apart
    ids = run("list", "--ids", "--backend", "openai").stdout.split()
    assert ids == ["openai/gpt-4o", "openai/text-embedding-3-small"]
    ids = run("list", "--ids", "-w", "context_length>=100k", "-w", "tags~prod").stdout.split()
    assert ids == ["anthropic/claude-3-5-sonnet-latest", "llama3.2:3b", "openai/gpt-4o"]
    ids = run("list", "--ids", "--task", "embedding", "--local").stdout.split()
    assert ids == ["nomic-embed-text"]
    ids = run("list", "--ids", "--size", "tiny", "--size", "small").stdout.split()
    small = ["Qwen/Qwen2.5-0.5B-Instruct", "llama3.2:3b", "mistral-7b-instruct-v0.2.Q4_K_M"]
    assert ids == [*small, "nomic-embed-text"]  # a 7.2B model is "7b" by name: small
    ids = run("list", "--ids", "--group", "embeddings", "--not-installed").stdout.split()
    assert ids == []
    ids = run("list", "--ids", "--query", '{"pricing.output": {"$gte": 10}}').stdout.split()
    assert ids == ["anthropic/claude-3-5-sonnet-latest", "openai/gpt-4o"]
    ids = run("list", "--ids", "--sort", "-parameters", "-n", "2").stdout.split()
    assert ids == ["llama3.1:8b", "qwen2.5-coder:7b"]


def test_list_json_is_exactly_the_registry_records(loaded: Path) -> None:
    result = run("list", "--json", "--where", "backend=ollama")
    listed = json.loads(result.stdout)
    with registry_of(loaded) as registry:
        assert listed == [m.to_dict() for m in registry.filter(backend="ollama")]
    assert json.loads(run("list", "--json", "-w", "id=nothing").stdout) == []


def test_list_bad_input(loaded: Path) -> None:
    for args, words in [
        (["-w", "contxt>5"], "unknown field 'contxt'"),
        (["-w", "context_length>lots"], "not a count"),
        (["--query", "{not json"], "--query is not JSON"),
        (["--task", "dancing"], "Invalid value"),
    ]:
        result = run("list", *args)
        assert result.exit_code == 2, args
        assert words in result.stderr or words in result.output
        assert "Traceback" not in result.output


def test_empty_registry_says_what_to_do(isolated: Path) -> None:
    result = run("list")
    assert result.exit_code == 0 and "registry is empty" in result.stderr


def test_show(loaded: Path) -> None:
    data = json.loads(run("show", "fast", "--json").stdout)
    assert data["id"] == "llama3.2:3b" and data["groups"] == ["production"]
    text = run("show", "sonnet").stdout
    assert "anthropic/claude-3-5-sonnet-latest" in text and "3.0 in / 15.0 out USD" in text
    missing = run("show", "lama3.2:3b")
    assert missing.exit_code == 3
    assert missing.stderr.strip() == (
        "error: no model named 'lama3.2:3b' (did you mean 'llama3.2:3b', 'llama3.1:8b'?)"
    )


def test_add(isolated: Path, tmp_path: Path) -> None:
    result = run("add", "ollama:phi3:3.8b-mini-q4_K_M", "--tag", "new", "--json")
    data = json.loads(result.stdout)
    assert (data["id"], data["backend"], data["parameters"], data["quantization"]) == (
        "phi3:3.8b-mini-q4_K_M",
        "ollama",
        3_800_000_000,
        "Q4_K_M",
    )
    assert data["refs"] == {"ollama": "phi3:3.8b-mini-q4_K_M"} and data["tags"] == ["new"]
    gguf = tmp_path / "Tiny-1.1B-Chat.Q8_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    data = json.loads(run("add", str(gguf), "--json").stdout)
    assert data["id"] == "Tiny-1.1B-Chat.Q8_0" and data["backend"] == "llamacpp"
    assert data["installed"] and data["file_size"] == 64 and data["location"] == str(gguf)
    data = json.loads(
        run(
            "add",
            "openai/gpt-4o-mini",
            "--context",
            "128k",
            "--price-in",
            "0.15",
            "--price-out",
            "0.6",
            "--set",
            "owner=ml",
            "--set",
            "rank=2",
            "--task",
            "chat",
            "--json",
        ).stdout
    )
    assert data["pricing"] == {"input": 0.15, "output": 0.6, "currency": "USD"}
    assert data["custom"] == {"owner": "ml", "rank": 2} and data["context_length"] == 131072
    dup = run("add", "ollama:phi3:3.8b-mini-q4_K_M")
    assert dup.exit_code == 4 and "already registered" in dup.stderr
    assert run("add", "ollama:phi3:3.8b-mini-q4_K_M", "--replace").exit_code == 0
    nobackend = run("add", "mystery-model")
    assert nobackend.exit_code == 2 and "pass --backend" in nobackend.stderr
    bad = run("add", "ollama:x", "--context", "-5")
    assert bad.exit_code == 2 and "field 'context_length'" in bad.stderr


def test_organize(loaded: Path) -> None:
    assert run("tag", "fast", "demo", "x").exit_code == 0
    assert run("untag", "fast", "x").exit_code == 0
    assert json.loads(run("show", "fast", "--json").stdout)["tags"] == ["demo", "local", "prod"]
    assert run("alias", "coder", "qwen2.5-coder:7b").exit_code == 0
    aliases = json.loads(run("alias", "--json").stdout)
    assert aliases == {
        "coder": "qwen2.5-coder:7b",
        "fast": "llama3.2:3b",
        "sonnet": "anthropic/claude-3-5-sonnet-latest",
    }
    assert run("alias", "--rm", "coder").exit_code == 0
    assert run("alias", "--rm", "coder").exit_code == 3
    assert run("alias", "lonely").exit_code == 2
    assert run("set", "fast", "owner=ann", 'limits={"rpm": 60}').exit_code == 0
    custom = json.loads(run("show", "fast", "--json").stdout)["custom"]
    assert custom == {"owner": "ann", "limits": {"rpm": 60}}
    assert run("set", "fast", "--unset", "owner").exit_code == 0
    assert run("set", "fast", "novalue").exit_code == 2
    assert run("group", "add", "mine", "fast", "sonnet", "-d", "my picks").exit_code == 0
    groups = json.loads(run("group", "list", "--json").stdout)
    assert groups["mine"]["models"] == ["anthropic/claude-3-5-sonnet-latest", "llama3.2:3b"]
    assert run("group", "remove", "mine", "sonnet").exit_code == 0
    assert run("group", "delete", "mine", "--yes").exit_code == 0
    assert "mine" not in json.loads(run("group", "list", "--json").stdout)
    assert run("group", "delete", "ghost", "--yes").exit_code == 3


def test_forget_asks_first(loaded: Path) -> None:
    refused = run("forget", "fast")
    assert refused.exit_code == 1 and "pass --yes" in refused.stderr
    assert run("forget", "fast", "sonnet", "--yes").exit_code == 0
    with registry_of(loaded) as registry:
        assert "llama3.2:3b" not in registry and len(registry) == 7


def test_export_and_import(loaded: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "backup.json"
    assert run("export", str(target)).exit_code == 0
    data = json.loads(target.read_text())
    assert len(data["models"]) == 9 and set(data["groups"]) == {"embeddings", "production"}
    partial = json.loads(run("export", "-w", "backend=openai").stdout)
    assert [m["id"] for m in partial["models"]] == [
        "openai/gpt-4o",
        "openai/text-embedding-3-small",
    ]
    assert run("forget", "fast", "--yes").exit_code == 0
    dry = json.loads(run("import", str(target), "--dry-run", "--json").stdout)
    assert dry["added"] == ["llama3.2:3b"] and dry["dry_run"]
    assert "llama3.2:3b" not in run("list", "--ids").stdout.split()
    assert run("import", "-", input=target.read_text()).exit_code == 0
    assert "llama3.2:3b" in run("list", "--ids").stdout.split()


def test_bad_imports_change_nothing(loaded: Path, tmp_path: Path) -> None:
    before = run("export").stdout
    broken = tmp_path / "broken.json"
    for content, words in [
        (
            '{"models": [{"id": "a", "backend": "x"}, {"id": "b"}]}',
            "record 1 ('b'), field 'backend'",
        ),
        ('{"models": [', "is not JSON"),
        ("\xff\xfe", "is not"),
    ]:
        broken.write_text(content, encoding="latin-1")
        result = run("import", str(broken), "--replace")
        assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert run("import", str(tmp_path / "absent.json")).exit_code == 2
    assert run("import", str(tmp_path)).exit_code == 2
    after = run("export").stdout
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "exported_at"}  # noqa: E731
    assert strip(before) == strip(after)


def test_config(isolated: Path) -> None:
    shown = json.loads(run("config", "--json").stdout)["settings"]
    assert shown["home"] == {
        "value": str(isolated),
        "source": "environment MODELCTL_HOME",
        "help": "data folder: registry, models, state",
    }
    assert run("config", "set", "log_level", "info").exit_code == 0
    assert Path("modelctl.toml").read_text().strip() == 'log_level = "info"'
    assert run("config", "get", "log_level").stdout.strip() == "info"
    assert "project file" in run("config").stdout
    assert run("config", "set", "api_key", "sk-1").exit_code == 2
    assert run("config", "set", "log_level", "loud").exit_code == 2
    assert run("config", "unset", "log_level").exit_code == 0
    assert run("config", "get", "nope").exit_code == 2


def test_home_option(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    assert run("--home", str(other), "add", "ollama:a").exit_code == 0
    assert (other / "registry.sqlite").exists()
    assert run("list", "--ids").stdout == ""


def test_version() -> None:
    from modelctl import __version__

    assert run("--version").stdout.strip() == f"modelctl {__version__}"


# ---------------------------------------------------------------- the real script


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_script_round_trip(isolated: Path) -> None:
    assert script("import", str(EXAMPLES)).returncode == 0
    result = script("list", "--json", "--where", "tags~prod")
    assert result.returncode == 0
    assert {m["id"] for m in json.loads(result.stdout)} == {
        "anthropic/claude-3-5-sonnet-latest",
        "llama3.2:3b",
        "openai/gpt-4o",
    }


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["show", "nope"], 3),
        (["list", "-w", "bad field=1"], 2),
        (["import", "/definitely/not/here.json"], 2),
        (["add", "ollama:x", "--parameters", "many"], 2),
    ],
)
def test_script_errors_are_one_line(isolated: Path, args: list[str], code: int) -> None:
    result = script(*args)
    assert result.returncode == code
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_script_unusable_registry_is_one_line(isolated: Path) -> None:
    isolated.mkdir(parents=True)
    (isolated / "registry.sqlite").write_bytes(b"garbage" * 200)
    result = script("list")
    assert result.returncode == 5 and "not a registry database" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_does_not_load_pydantic_or_rich(isolated: Path) -> None:
    """The start path stays lean: `list --json` needs neither the validation library nor rich."""
    assert script("import", str(EXAMPLES)).returncode == 0
    code = (
        "import sys; from modelctl.cli import main\n"
        "sys.argv = ['modelctl', 'list', '--json', '-w', 'tags~prod']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('pydantic', 'rich', 'rich.console') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in result.stderr, result.stderr
    assert len(json.loads(result.stdout)) == 3
