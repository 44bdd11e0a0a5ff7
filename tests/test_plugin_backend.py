"""A third-party backend, registered through the `modelctl.backends` entry point group the way a
pip-installed plugin would be, is treated like a built-in one by every interface: the registry's
filters, the CLI's list, show and rm, the management API's delete, and the OpenAI- and
Ollama-compatible APIs (listing and serving). Nothing in the core names it."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from tests.live import running

PLUGIN = '''
"""acme: models kept as `*.acme` files in $ACME_STORE, answered by echoing the last message."""

import os
from pathlib import Path

from modelctl.backends import Backend, BackendStatus, DeletePlan, Handle, inside, response


class AcmeBackend(Backend):
    name = "acme"
    runtimes = ("acme engine",)
    prefixes = ("ac",)
    model_format = "acme"

    @property
    def store(self) -> Path:
        return Path(os.environ["ACME_STORE"])

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, models=len(self.discover()))

    def discover(self):
        from modelctl.record.model import Model

        return [
            Model.from_dict({
                "id": path.stem, "backend": self.name, "refs": {self.name: path.stem},
                "tasks": ["chat"], "capabilities": ["chat", "streaming"],
                "location": str(path), "file_size": path.stat().st_size, "installed": True,
            })
            for path in sorted(self.store.glob("*.acme"))
        ]

    def plan_delete(self, ref: str) -> DeletePlan:
        path = inside(self.store, self.own_name(ref) + ".acme")
        return DeletePlan(self.name, ref, (str(path),), path.stat().st_size, execute=path.unlink)

    def load(self, model, **options) -> Handle:
        return AcmeHandle(model.id)


class AcmeNeedsMore(AcmeBackend):
    name = "acme-pro"
    requires = ("acme_pro_engine_that_is_not_installed",)
    install_hint = "pip install acme-pro"

    def install(self, ref, progress=None, **options):
        raise AssertionError("an unavailable backend is never asked")


class AcmeHandle(Handle):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def chat(self, messages, *, stream=False, **options):
        text = "acme says: " + messages[-1]["content"]
        usage = {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
        if stream:
            return iter([
                response(self.model_id, "chat.completion.chunk",
                         {"delta": {"role": "assistant", "content": text}, "finish_reason": None}),
                response(self.model_id, "chat.completion.chunk",
                         {"delta": {}, "finish_reason": "stop"}, usage),
            ])
        message = {"role": "assistant", "content": text}
        return response(self.model_id, "chat.completion",
                        {"message": message, "finish_reason": "stop"}, usage)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin as pip would leave it: a module and a dist-info with its entry point, on
    sys.path; and a store with two models."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_models.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "acme_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[modelctl.backends]\n"
        "acme = acme_models:AcmeBackend\n"
        "acme-pro = acme_models:AcmeNeedsMore\n"
    )
    store = tmp_path / "acme-store"
    store.mkdir()
    (store / "rocket.acme").write_bytes(b"r" * 1000)
    (store / "anvil.acme").write_bytes(b"a" * 2000)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ACME_STORE", str(store))
    importlib.invalidate_caches()
    yield store
    sys.modules.pop("acme_models", None)


def test_the_backend_says_what_it_is(plugin: Path) -> None:
    with ModelManager() as manager:
        kind = manager.backend_kinds()["acme"]
        assert kind.local and kind.can_delete and kind.can_load and not kind.can_install
        assert kind.runtimes == ("acme engine",) and kind.model_format == "acme"
        assert "acme" in manager.schemes.local
        assert manager.parse_ref("ac:rocket").backend == "acme"  # its own prefix


def test_a_backend_missing_its_dependency_says_so_and_keeps_its_kind(plugin: Path) -> None:
    from modelctl.record.errors import BackendError

    with ModelManager() as manager:
        (status,) = manager.check_backend_status("acme-pro")
        assert not status.available and status.hint == "pip install acme-pro"
        kind = manager.backend_kinds()["acme-pro"]
        assert kind.local and kind.runtimes == ("acme engine",)  # its models stay local
        with pytest.raises(BackendError, match="acme-pro is unavailable: needs acme_pro_engine"):
            manager.install_model("acme-pro:rocket")


def test_every_interface_treats_it_as_a_built_in(plugin: Path) -> None:
    cli = CliRunner()
    with ModelManager() as manager:
        report = manager.sync(only=["acme"])
        assert report.errors == {}
        assert {m.id for m in manager.list_models(local=True)} == {"rocket", "anvil"}
        assert manager.list_models(local=False) == []
        assert manager.registry.resolve("ac:rocket") == "rocket"

    listed = json.loads(cli.invoke(app, ["list", "--json", "--backend", "acme"]).stdout)
    assert {m["id"] for m in listed} == {"rocket", "anvil"}
    shown = cli.invoke(app, ["show", "anvil", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["backend"] == "acme"

    removed = cli.invoke(app, ["rm", "anvil", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert not (plugin / "anvil.acme").exists()

    with ModelManager() as manager, running(manager) as url:
        assert manager.registry["anvil"].installed is False
        # /v1/models and /api/tags list what a request can use: installed local models only
        openai_ids = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert openai_ids == {"rocket"}
        tags = httpx.get(f"{url}/api/tags").json()["models"]
        assert [t["name"] for t in tags] == ["rocket"]
        assert tags[0]["details"]["format"] == "acme"  # as the backend declares it

        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "rocket", "messages": [{"role": "user", "content": "hi"}]},
        ).json()
        assert answer["choices"][0]["message"]["content"] == "acme says: hi"
        chat = httpx.post(
            f"{url}/api/chat",
            json={"model": "rocket", "messages": [{"role": "user", "content": "yo"}]},
            timeout=30,
        )
        assert json.loads(chat.text.splitlines()[-1])["done"] is True

        # the management API deletes its files, as it does a built-in local backend's
        gone = httpx.delete(f"{url}/api/v1/models/rocket")
        assert gone.status_code == 200, gone.text
        assert gone.json()["plan"]["paths"] == [str(plugin / "rocket.acme")]
        assert not (plugin / "rocket.acme").exists()
        assert httpx.get(f"{url}/v1/models").json()["data"] == []
