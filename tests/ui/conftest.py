"""The dashboard's end-to-end tests: a real `modelctl serve` child process, Debian's Chromium
driven by Playwright (pytest-playwright's fixtures, pointed at the system's browser: Playwright's
own download cannot reach the internet here), and a loopback Hugging Face hub to pull from.

Every wait is for something the page shows (Playwright's auto-waiting `expect`); none is a fixed
sleep. Each test saves screenshots under test-results/dashboard/ (MODELCTL_ARTIFACTS moves it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.live import serve_process
from tests.protocol_servers import FakeHub, serve

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
]  # fmt: skip


def chromium() -> str:
    """The system's Chromium (`make test` installs Debian's package where it is missing)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on this machine: `apt-get install chromium` (make test does it)")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": chromium(), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Any:
    """`shot(page, "name")`: a full-page screenshot, kept as the test's artifact."""
    default = Path(__file__).resolve().parents[2] / "test-results"
    folder = Path(os.environ.get("MODELCTL_ARTIFACTS", default)).resolve() / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def generated_models(n: int) -> list[dict[str, Any]]:
    """`n` records across backends, tasks and sizes, as a team's registry holds them."""
    backends = ["ollama", "huggingface", "openai", "anthropic", "lmstudio"]
    tasks = [["chat"], ["code", "chat"], ["embedding"], ["chat", "vision"], ["reasoning", "chat"]]
    return [
        {
            "id": f"gen/model-{i:05d}",
            "name": f"Generated {i}",
            "backend": backends[i % 5],
            "tasks": tasks[(i // 5) % 5],
            "parameters": (1 + i % 70) * 1_000_000_000,
            "context_length": 4096 * (1 + i % 32),
            "file_size": None if backends[i % 5] in ("openai", "anthropic") else (1 + i % 70) << 29,
            "description": "a model for the dashboard's tests" + (" (multilingual)" * (i % 7 == 0)),
            "tags": ["even" if i % 2 == 0 else "odd"],
        }
        for i in range(n)
    ]


@dataclass
class Server:
    url: str
    home: Path
    models: Path
    hub: FakeHub
    key: str | None = None

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path)
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)


def start_server(tmp: Path, *, key: str | None = None, extra: int = 300) -> Iterator[Server]:
    """A registry of generated models and one tiny GGUF model, served by `modelctl serve`;
    HF_ENDPOINT points at a loopback hub that holds another tiny GGUF model."""
    from modelctl.ops.demo import TinySpec, write_llama

    home, models, work = tmp / "home", tmp / "models", tmp / "work"
    for folder in (models, work):
        folder.mkdir(parents=True)
    write_llama(models / "tiny-chat.gguf", TinySpec(name="Tiny chat"))
    pulled = write_llama(tmp / "Pulled-Q8_0.gguf", TinySpec(name="Pulled", dtype="Q8_0"))
    hub = FakeHub(repos={"org/Pulled-GGUF": {"Pulled-Q8_0.gguf": pulled.read_bytes()}})
    document = tmp / "models.json"
    document.write_text(
        json.dumps({"format": "modelctl.registry", "version": 1, "models": generated_models(extra)})
    )
    with serve(hub) as hub_url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MODELCTL_", "OLLAMA_"))},
            "MODELCTL_HOME": str(home),
            "MODELCTL_CONFIG": str(tmp / "no-config.toml"),
            "MODELCTL_MODEL_DIRS": str(models),
            "HF_ENDPOINT": hub_url,
            "HF_HOME": str(tmp / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OLLAMA_HOST": "http://127.0.0.1:9",  # no daemon: nothing answers there
        }
        if key:
            env["MODELCTL_API_KEY"] = key
        run = lambda *args: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "modelctl", *args],
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
            timeout=120,
        )
        run("import", str(document))
        run("sync", "--backend", "llamacpp")
        proc, url = serve_process(env | {"PWD": str(work)})
        try:
            yield Server(url=url, home=home, models=models, hub=hub, key=key)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("dashboard"))
