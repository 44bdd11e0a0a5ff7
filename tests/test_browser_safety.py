"""No web page can drive the server: what a page can send without asking first (a foreign
Origin, text/plain or form bodies) and what DNS rebinding sends (a foreign Host) is refused
before any route runs, with and without an API key, while the real clients keep working.
Each probe below succeeded on the first version (201, 200, a model pinned, the home folder
read)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from modelctl.manager import ModelManager
from modelctl.server.guard import host_allowed
from tests.live import running

EVIL = "http://evil.example"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def manager(tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    monkeypatch.setenv("MODELCTL_ORIGINS", "http://trusted.example:*, app://notes")
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


def _page(url: str, path: str, body: object, **headers: str) -> httpx.Response:
    """What a page's `fetch(url, {method: "POST", body})` sends without a preflight."""
    sent = {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8", **headers}
    return httpx.post(url + path, content=json.dumps(body), headers=sent, timeout=30)


@pytest.mark.parametrize("api_key", [None, "sk-local"])
def test_a_foreign_page_is_refused_before_anything_happens(
    manager: ModelManager, api_key: str | None
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with running(manager, api_key=api_key) as url:
        probes = [
            ("/api/v1/models", {"id": "planted", "backend": "ollama"}),
            ("/api/v1/import", {"models": [{"id": "imported", "backend": "ollama"}]}),
            ("/api/v1/loaded", {"model": "tiny", "pin": True, "keep_alive": -1}),
            ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}),
            ("/v1/chat/completions", {"model": "tiny", "messages": HI}),
        ]  # fmt: skip
        for path, body in probes:
            answer = _page(url, path, body, **auth)
            assert answer.status_code == 403, (path, answer.text)
            assert "evil.example" in answer.text and "MODELCTL_ORIGINS" in answer.text
        # the same bodies as text/plain without an Origin (an old browser, a form): 415
        for path, body in probes:
            answer = httpx.post(url + path, content=json.dumps(body), timeout=30,
                                headers={"Content-Type": "text/plain", **auth})  # fmt: skip
            assert answer.status_code == 415, (path, answer.text)
            assert "application/json" in answer.text
        form = httpx.post(url + "/api/generate", data={"model": "tiny"}, headers=auth)
        assert form.status_code == 415
        # nothing was done
        assert "planted" not in manager.registry and "imported" not in manager.registry
        assert manager.loaded() == []


def test_a_foreign_host_is_refused(manager: ModelManager) -> None:
    """DNS rebinding: a page at attacker.example whose name now resolves to 127.0.0.1."""
    with running(manager) as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.io:{port}"):
            answer = httpx.get(url + "/api/v1/status", headers={"Host": host})
            assert answer.status_code == 403, host
            assert str(manager.home) not in answer.text
            assert answer.json()["error"]["code"] == "forbidden_host"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"app.localhost:{port}"):
            assert httpx.get(url + "/api/v1/status", headers={"Host": host}).status_code == 200
        ollama_style = httpx.get(url + "/api/tags", headers={"Host": "attacker.example"})
        assert ollama_style.status_code == 403 and "host name" in ollama_style.json()["error"]


def test_own_and_configured_origins_are_allowed_with_cors(manager: ModelManager) -> None:
    with running(manager) as url:
        own = httpx.get(url + "/api/v1/status", headers={"Origin": url})
        assert own.status_code == 200 and own.headers["access-control-allow-origin"] == url
        configured = "http://trusted.example:3000"
        answer = httpx.post(
            url + "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
            },
            headers={"Origin": configured},
            timeout=60,
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == configured
        preflight = httpx.options(
            url + "/api/chat",
            headers={"Origin": "app://notes", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )  # fmt: skip
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "app://notes"
        assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
        refused = httpx.options(
            url + "/api/chat",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        plain = httpx.get(url + "/health")  # no Origin: no CORS headers at all
        assert "access-control-allow-origin" not in plain.headers


def test_the_real_clients_still_work(manager: ModelManager) -> None:
    with running(manager) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert answer.choices[0].message.role == "assistant"
        local = ollama.Client(host=url)
        assert [m.model for m in local.list().models] == ["tiny"]
        chat = local.chat(model="tiny", messages=[{"role": "user", "content": "hi"}],
                          options={"num_predict": 2})  # fmt: skip
        assert chat.message.role == "assistant"
        bodiless = httpx.post(url + "/api/v1/state")  # no body, no content type: nothing to misread
        assert bodiless.status_code != 415


def test_which_hosts_a_server_answers() -> None:
    assert host_allowed("localhost:8765", bound="127.0.0.1")
    assert host_allowed("[::1]:8765", bound="::1")
    assert not host_allowed("evil.example", bound="127.0.0.1")
    assert not host_allowed("", bound="127.0.0.1")
    assert host_allowed("models.lan:8765", bound="127.0.0.1", extra=["models.lan"])
    assert host_allowed("anything.example", bound="0.0.0.0")  # bound beyond loopback: a key
    assert host_allowed("0.0.0.0:8765", bound="127.0.0.1")  # what some clients send
    assert host_allowed("[::ffff:127.0.0.1]:8765", bound="127.0.0.1")
    assert host_allowed("models.lan", bound="127.0.0.1", extra=["models.lan:8765"])
