"""Deletes that touch only what they mean to, and say what they left; installs that write only
through files they created; a deleted model refused in words. Each defect below was reproduced
on the first version: the link's target deleted, a 502 load_failed for a deleted model, a
deleted model still served, every progress event of a download kept in memory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelctl.backends import Progress
from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import BackendError, NotInstalled, PartialDelete
from tests.live import running
from tests.protocol_servers import FakeHub, serve

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    write_llama(models / "b.gguf", TinySpec(name="B"))
    (models / "a.gguf").symlink_to(models / "b.gguf")  # a.gguf → b.gguf, in the same folder
    write_llama(models / "tiny.gguf", TinySpec(name="Tiny"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(models))
    return models


@pytest.fixture
def manager(folder: Path) -> Iterator[ModelManager]:
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


def test_rm_of_a_link_deletes_the_link_not_another_models_file(
    manager: ModelManager, folder: Path
) -> None:
    assert {"a", "b"} <= {m.id for m in manager.list_models(installed=True)}
    result = CliRunner().invoke(app, ["rm", "a", "--yes"])
    assert result.exit_code == 0, result.output
    assert not (folder / "a.gguf").is_symlink() and not (folder / "a.gguf").exists()
    assert (folder / "b.gguf").is_file()  # the first version deleted this one
    assert manager.registry["b"].installed and not manager.registry["a"].installed


def test_a_deleted_model_is_refused_in_words(manager: ModelManager) -> None:
    """Deleted through the server: the next request was a 502 load_failed. Deleted by another
    process while loaded here: it went on being served from the deleted file."""
    with running(manager) as url:
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).is_success
        gone = httpx.delete(f"{url}/api/v1/models/tiny")
        assert gone.status_code == 200 and manager.loaded() == []  # unloaded first
        openai_style = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert openai_style.status_code == 404
        assert openai_style.json()["error"]["code"] == "model_not_installed"
        chat = {"model": "tiny", "messages": HELLO, "stream": False}
        ollama_style = httpx.post(f"{url}/api/chat", json=chat, timeout=60)
        assert ollama_style.status_code == 404
        assert ollama_style.json()["error"] == "tiny is not installed (modelctl pull tiny)"

        # b is loaded here; another process (another manager on the same registry) deletes it
        body = {"model": "b", "messages": HELLO, "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).is_success
        with ModelManager() as other:
            other.delete_model("b")
        refused = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert refused.status_code == 404, refused.text


def test_manager_delete_unloads_first(manager: ModelManager) -> None:
    manager.chat(HELLO, "tiny", max_tokens=1)
    assert [s["model"] for s in manager.loaded()] == ["tiny"]
    manager.delete_model("tiny")
    assert manager.loaded() == []
    with pytest.raises(NotInstalled, match="tiny is not installed"):
        manager.chat(HELLO, "tiny", max_tokens=1)


def test_a_delete_that_stops_half_way_says_what_is_left(tmp_path: Path, folder: Path) -> None:
    split = folder / "split"
    split.mkdir()
    first = split / "big-00001-of-00002.gguf"
    shutil.copy(folder / "tiny.gguf", first)
    (split / "big-00002-of-00002.gguf").mkdir()  # a part that cannot be unlinked
    with ModelManager() as m:
        model = m.registry.add({"id": "big", "backend": "llamacpp", "location": str(first),
                                "refs": {"llamacpp": str(first)}, "installed": True})  # fmt: skip
        with pytest.raises(PartialDelete, match="could not delete 1 file") as failed:
            m.delete_model(model.id)
        assert "big-00002-of-00002.gguf" in failed.value.left[0]
        record = m.registry[model.id]
        assert not record.installed and record.status == "missing"
        assert record.custom["files_left"] == failed.value.left
        assert not first.exists()  # what could go went


def test_a_download_never_writes_through_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_llama(tmp_path / "src.gguf", TinySpec(dtype="Q8_0")).read_bytes()
    models = tmp_path / "models"
    target = models / "org__Tiny-GGUF"
    target.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (target / "Tiny-Q8_0.gguf.part").symlink_to(victim)  # planted where the download writes
    hub = FakeHub(repos={"org/Tiny-GGUF": {"Tiny-Q8_0.gguf": data}})
    with serve(hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(models))
        with ModelManager() as m, pytest.raises(BackendError, match="cannot write"):
            m.install_model("hf:org/Tiny-GGUF/Tiny-Q8_0.gguf", force=True)
    assert victim.read_text() == "keep me"


def test_install_jobs_keep_a_bounded_progress_summary() -> None:
    from modelctl.runtime.events import EventBus
    from modelctl.server.jobs import EVENTS_KEPT, Jobs

    class Registry:
        class store:
            @staticmethod
            def close() -> None:
                pass

    class Manager:
        registry = Registry()
        events = EventBus()  # where a finished job says so

        def install_model(self, ref: str, *, progress: Any, **options: Any) -> Any:
            for done in range(20_000):  # a big download reports every chunk
                progress(Progress("downloading", done, 20_000))
            return type("Model", (), {"id": ref})()

    jobs = Jobs(Manager())  # type: ignore[arg-type]
    job = jobs.start("big")
    events = list(jobs.follow(job, timeout=60))
    assert job.state == "done" and job.sequence == 20_002
    assert len(job.events) == EVENTS_KEPT  # the first version kept all 20,002
    assert events[-1]["state"] == "done" and len(events) <= job.sequence


def test_a_model_being_deleted_cannot_be_loaded_until_the_delete_ends(
    manager: ModelManager, folder: Path
) -> None:
    """Held at the point where the record says deleting and the files are still there."""
    from modelctl.ops.install import remove

    seen: list[str] = []

    def unload(model_id: str) -> None:  # what the manager passes: called mid-delete
        assert (folder / "tiny.gguf").exists() and manager.registry["tiny"].status == "deleting"
        with pytest.raises(NotInstalled):
            manager.chat(HELLO, "tiny", max_tokens=1)
        with pytest.raises(NotInstalled, match="being deleted"):  # a request already past
            manager.scheduler.acquire("tiny")  # its checks: the load itself refuses
        seen.append(model_id)

    remove(manager.registry, manager.backends, "tiny", unload=unload)
    assert seen == ["tiny"] and not (folder / "tiny.gguf").exists()
    assert manager.registry["tiny"].status == "available" and not manager.registry["tiny"].installed
