"""R4: hostile names and paths through every command and endpoint that takes one.

Each hostile string (`../`, absolute paths, links out of the model folder, NUL bytes, names of
10,000 characters, look-alikes of a registered name, names of secret variables) goes through
every CLI command (in process, through Typer's runner) and every HTTP endpoint (a real server on
a loopback port) that takes a model name, alias, tag, group, path or file. Every file outside
the stores is fingerprinted before and after: none may change, appear or go. No command may end
in a traceback or print an error line of thousands of characters, no endpoint may answer a 5xx
(but a backend that cannot be reached, or a registered model whose file its runtime cannot
load: a 502 by design), no look-alike may reach the real model, and the secrets in the
environment appear in no export, response, log, store file or `/metrics`.

Nothing here names a real system file: every `../` and absolute path lands in the watched tree
under tmp_path (the tests may run as root), where a sentinel waits for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from tests.live import running
from tests.protocol_servers import FakeAnthropic, FakeHub, FakeOpenAI, serve
from tests.reliability.conftest import scale

SECRETS = {
    "MODELCTL_API_KEY": "r4-server-key-7f3c9a1e5b",
    "OPENAI_API_KEY": "sk-r4-openai-2d8e4b6a0c",
    "HF_TOKEN": "hf_r4token5a7c9e1b3d",
    "ANTHROPIC_API_KEY": "sk-ant-r4-8b0d2f4a6c",
}
REFUSES = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused
EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "models.json"
UPSTREAM = ("cannot reach", "cannot download", "failed to load")  # the 5xx that are by design
LOOKALIKES = ("t\u0456ny", "\uff54\uff49\uff4e\uff59", "tin\u0443", "tiny\u200b", "\u202etiny")
LONGEST_LINE = 1_000  # characters of one error line: a 10,000-character name is cut to its ends


def hostile_inputs(watched: Path, models: Path) -> dict[str, tuple[str, ...]]:
    """Names and paths no command may be led astray by, by kind, the sharpest first; every
    path lands in `watched`."""
    return {
        "traversal": ("../../etc/passwd", "../../../../../../etc/passwd", "../", "..\\",
                      "..\\..\\etc\\passwd"),
        "absolute": (str(watched / "sentinel.gguf"), "/proc/self/environ", "/",
                     str(watched / "etc" / "passwd"), str(watched)),
        "encoded": ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2f..%2fsentinel.gguf", "%00"),
        "control": ("tiny\x00../../etc/passwd", "tiny\r\nX-Injected: 1", "\x00", "ti\nny", "a\tb"),
        "long": ("x" * 9_995 + ".gguf", "../" * 3_334, "a" * 10_000),
        "look-alike": LOOKALIKES,
        "dots": ("..", "~/.ssh/authorized_keys", "", ".", "~", " "),
        "link out": (str(models / "escape.gguf"), str(models / "linked" / "sentinel.gguf"),
                     "escape"),
        "secret name": ("$OPENAI_API_KEY", "${HF_TOKEN}", "%ANTHROPIC_API_KEY%"),
        "url": ("file:///proc/self/environ", f"{REFUSES}/x.gguf"),
        "prefixed": ("hf:org/repo/../../../../sentinel.gguf", "hf:../../etc", "ollama:../../x"),
    }  # fmt: skip


def cli_calls(name: str, cwd: Path) -> list[list[str]]:
    """Every command that takes a model, alias, tag, group, path or file, given `name`."""
    victim = ["--backend", "llamacpp", "--ref", f"llamacpp={name}", "--location", name]
    calls = [
        ["show", name],
        ["add", name],
        ["add", "r4-victim", *victim, "--installed", "--replace"],  # a record pointing at it
        ["rm", "r4-victim", "--yes"],
        ["forget", "r4-victim", "--yes"],
        ["rm", name, "--dry-run"],
        ["rm", name, "--yes"],
        ["forget", name, "--yes"],
        ["tag", name, "r4"],
        ["tag", "tiny", name],
        ["untag", "tiny", name],
        ["alias", name, "tiny"],
        ["alias", "--rm", name],
        ["set", "tiny", f"{name}=1"],
        ["set", "tiny", "--unset", name],
        ["group", "add", name, "tiny"],
        ["group", "add", "r4", name],
        ["group", "remove", name, "tiny"],
        ["group", "delete", name, "--yes"],
        ["list", "--group", name, "--tag", name, "--ids"],
        ["fit", name],
        ["pull", name],
        ["pull", name, "--backend", "llamacpp", "--force"],
        ["pull", name, "--backend", "huggingface", "--force"],
        ["logs", name],
        ["load", name],
        ["unload", name],
        ["use", name],
        ["stats", name],
        ["profile", name, "-n", "1"],
        ["compare", name, "tiny"],
        ["run", name, "hi", "-n", "1"],
        ["import", name, "--dry-run"],
        ["import", name],
        ["config", "get", name],
        ["config", "set", name, "1"],
        ["sync", "--backend", name],
    ]
    if _lands_in(cwd, name):  # `export FILE` writes where it is told: only a target in cwd
        calls.append(["export", name])
    return calls


def _lands_in(cwd: Path, name: str) -> bool:
    try:
        target = os.path.abspath(os.path.join(cwd, name))
        return os.path.isdir(target) or target.startswith(f"{cwd}{os.sep}")
    except ValueError:  # a NUL byte: refused before any file is opened
        return True


def api_calls(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keywords) for every endpoint that takes a model, name or path."""
    whole, path = quote(name, safe=""), quote(name, safe="/:")
    ask = {"messages": [{"role": "user", "content": "hi"}], "stream": False}
    victim = {"id": "r4-victim", "backend": "llamacpp", "refs": {"llamacpp": name},
              "location": name, "installed": True}  # fmt: skip
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for ref in dict.fromkeys((whole, path)):  # `/` escaped, and as it is
        calls += [
            ("GET", f"/api/v1/models/{ref}", {}),
            ("PATCH", f"/api/v1/models/{ref}", {"json": {"add_tags": ["r4"]}}),
            ("DELETE", f"/api/v1/models/{ref}", {"params": {"dry_run": "true"}}),
            ("DELETE", f"/api/v1/models/{ref}", {"params": {"forget": "true"}}),
            ("GET", f"/api/v1/logs/{ref}", {}),
            ("GET", f"/api/v1/compatibility/{ref}", {}),
            ("GET", f"/api/v1/capabilities/{ref}", {}),
            ("POST", f"/api/v1/profiles/{ref}", {"params": {"n": 1}}),
            ("DELETE", f"/api/v1/loaded/{ref}", {}),
            ("GET", f"/api/v1/installs/{ref}", {}),
            ("DELETE", f"/api/v1/installs/{ref}", {}),
            ("GET", f"/v1/models/{ref}", {}),
        ]
    return [
        *calls,
        ("POST", "/api/v1/models", {"json": {"id": name, "backend": "llamacpp", "location": name}}),
        ("POST", "/api/v1/models", {"json": victim, "params": {"replace": "true"}}),
        ("DELETE", "/api/v1/models/r4-victim", {}),
        ("DELETE", "/api/delete", {"json": {"model": "r4-victim"}}),
        ("POST", "/api/v1/models",
         {"json": victim | {"location": None}, "params": {"replace": "true"}}),
        ("PATCH", "/api/v1/models/r4-victim", {"json": {"fields": {"location": name}}}),
        ("DELETE", "/api/v1/models/r4-victim", {}),
        ("DELETE", "/api/v1/models/r4-victim", {"params": {"forget": "true"}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"add_tags": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"remove_tags": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"add_aliases": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"remove_aliases": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"add_groups": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"remove_groups": [name]}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"custom": {name: 1}}}),
        ("PATCH", "/api/v1/models/tiny", {"json": {"custom": {name: None}}}),
        ("GET", "/api/v1/models", {"params": {"group": name, "tag": name, "backend": name}}),
        ("POST", "/api/v1/loaded", {"json": {"model": name}}),
        ("PUT", "/api/v1/current", {"json": {"model": name}}),
        ("POST", "/api/v1/usage", {"json": {"model": name, "latency": 0.1}}),
        ("GET", "/api/v1/usage", {"params": {"model": name}}),
        ("GET", "/api/v1/stats", {"params": {"model": name}}),
        ("GET", "/api/v1/profiles", {"params": {"model": name}}),
        ("POST", "/api/v1/sync", {"json": {"only": [name]}}),
        ("POST", "/api/v1/installs", {"json": {"model": name}}),
        ("POST", "/api/v1/installs", {"json": {"model": name, "backend": "llamacpp"}}),
        ("POST", "/api/v1/import", {"json": {"document": {"models": [{"id": name}]}}}),
        ("POST", "/api/v1/import",
         {"json": {"document": {"models": [victim | {"id": name}]}, "dry_run": True}}),
        ("POST", "/api/show", {"json": {"model": name}}),
        ("POST", "/api/show", {"json": {"name": name}}),
        ("DELETE", "/api/delete", {"json": {"model": name}}),
        ("POST", "/api/pull", {"json": {"model": name, "stream": False}}),
        ("POST", "/api/pull", {"json": {"model": name}}),
        ("POST", "/api/chat", {"json": {"model": name, **ask}}),
        ("POST", "/api/generate", {"json": {"model": name, "prompt": "hi", "stream": False}}),
        ("POST", "/v1/chat/completions", {"json": {"model": name, **CHAT}}),
        ("POST", "/v1/completions", {"json": {"model": name, "prompt": "hi", "max_tokens": 1}}),
        ("POST", "/api/embed", {"json": {"model": name, "input": "hi"}}),  # loaded for embeddings
        ("POST", "/api/embeddings", {"json": {"model": name, "prompt": "hi"}}),
        ("POST", "/v1/embeddings", {"json": {"model": name, "input": "hi"}}),
        ("POST", "/api/generate", {"json": {"model": name, "prompt": "", "keep_alive": 0}}),
    ]  # fmt: skip


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": False}


# ---------------------------------------------------------------------- what is watched


def fingerprint(root: Path, skip: set[Path]) -> dict[str, Any]:
    """Every entry under `root` but the `skip` folders: a file by size, mtime and sha256, a
    link by its target, a folder by its being there."""
    seen: dict[str, Any] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            path = here / name
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[str(path)] = ("dir",)
            else:
                info = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[str(path)] = (info.st_size, info.st_mtime_ns, digest)
    return seen


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def files_under(*roots: Path) -> list[Path]:
    return [Path(d) / f for root in roots for d, _, fs in os.walk(root) for f in fs]


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """The stores (home, models, HF cache, the working folder exports land in) and, around
    them, a watched tree with sentinels where hostile paths lead."""
    watched = tmp_path / "outside"
    models = tmp_path / "models"
    cwd = watched / "j1" / "j2" / "j3" / "j4" / "j5" / "cwd"  # ../ x6 leads to `watched`
    for folder in (models, cwd, watched / "etc", watched / "userhome" / ".ssh"):
        folder.mkdir(parents=True)
    write_llama(models / "tiny.gguf", TinySpec(name="Tiny"))
    write_llama(watched / "sentinel.gguf", TinySpec(name="Sentinel"))
    (watched / "etc" / "passwd").write_text("root:x:0:0:sentinel\n")
    (watched / "userhome" / ".ssh" / "authorized_keys").write_text("ssh-ed25519 sentinel\n")
    (watched / "secret.txt").write_text("not for modelctl\n")
    (models / "escape.gguf").symlink_to(watched / "sentinel.gguf")
    (models / "linked").symlink_to(watched, target_is_directory=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(watched / "userhome"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(models))
    for name in ("OLLAMA_HOST", "LMSTUDIO_URL", "MODELCTL_OLLAMA_REGISTRY"):
        monkeypatch.setenv(name, REFUSES)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    # the Hub, OpenAI and Anthropic answer at once, and refuse these keys
    hub = FakeHub(repos={"org/gated-repo": {"m.gguf": b"GGUF"}}, gated={"org/gated-repo"})
    with (
        serve(hub) as hub_url,
        serve(FakeOpenAI(key="sk-other")) as openai_url,
        serve(FakeAnthropic(key="sk-ant-other")) as anthropic_url,
    ):
        monkeypatch.setenv("HF_ENDPOINT", hub_url)
        monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_url}/v1")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_url)
        yield {"tmp": tmp_path, "watched": watched, "models": models, "cwd": cwd,
               "home": tmp_path / "home", "hf": tmp_path / "hf-home"}  # fmt: skip


# ---------------------------------------------------------------------- the test


class Probe:
    """Runs commands and requests, and keeps what a user or a client could read."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.seen: list[str] = []  # every output, body and header: scanned for secrets
        self.tracebacks: list[str] = []
        self.server_errors: list[str] = []
        self.long_lines: list[str] = []
        self.cli_calls = self.api_calls = 0
        self.client: httpx.Client | None = None

    def cli(self, *args: str) -> Any:
        self.cli_calls += 1
        result = self.runner.invoke(app, list(args))
        self.seen += [result.stdout, result.stderr]
        unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
        if unexpected or result.exit_code == 70 or "Traceback" in result.output:
            self.tracebacks.append(f"{args!r:.120}: {result.exception!r:.200} {result.stderr:.300}")
        self.long_lines += [f"{args!r:.80}: {line:.200}…" for line in result.stderr.splitlines()
                            if len(line) > LONGEST_LINE]  # fmt: skip
        return result

    def call(self, method: str, path: str, *, upstream: bool = False, **kwargs: Any) -> Any:
        """One request; `upstream`: a backend is meant to fail it (a 5xx is no defect)."""
        assert self.client is not None
        self.api_calls += 1
        where = f"{method} {path[:80]} {kwargs!r:.200}"
        try:
            reply = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # the server hung up or hung: as bad as a 500
            self.server_errors.append(f"{where}: {exc!r}")
            return httpx.Response(599, text=repr(exc))
        self.seen.append(f"{reply.headers}\n{reply.text}")
        designed = upstream or any(words in reply.text for words in UPSTREAM)
        if reply.status_code >= 500 and not designed:
            self.server_errors.append(f"{where}: {reply.status_code} {reply.text:.300}")
        elif reply.status_code == 202 and path == "/api/v1/installs":  # the job, to its end
            job = reply.json()["id"]
            self.call("GET", f"/api/v1/installs/{job}/events")
            done = self.call("GET", f"/api/v1/installs/{job}").json()
            if done["code"] == "internal_error":
                self.server_errors.append(f"{where}: install job {done['error']:.300}")
        return reply

    @contextmanager
    def serving(self, manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        """A real server for the API calls, and for the CLI's `load`, `unload`, `use`, `logs`."""
        with running(manager, api_key=SECRETS["MODELCTL_API_KEY"], restore=False) as url:
            monkeypatch.setenv("MODELCTL_SERVER", url)
            key = {"Authorization": f"Bearer {SECRETS['MODELCTL_API_KEY']}"}
            with httpx.Client(base_url=url, headers=key, timeout=60) as self.client:
                yield
            refused = httpx.get(f"{url}/api/v1/status", headers={"x-api-key": "wrong"})
            self.seen.append(refused.text)


def test_hostile_names_and_paths(
    layout: dict[str, Path],
    figures: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.monotonic()
    caplog.set_level(logging.DEBUG)
    watched, models, cwd = layout["watched"], layout["models"], layout["cwd"]
    stores = {layout["home"], models, layout["hf"], cwd}
    kinds = hostile_inputs(watched, models)
    inputs = [name for names in kinds.values() for name in names[: scale(2, None)]]
    probe = Probe()
    lookalikes: list[str] = []
    manager = ModelManager()
    manager.import_metadata(json.loads(EXAMPLES.read_text()))
    manager.sync(only=["llamacpp"])
    before = fingerprint(layout["tmp"], stores)

    # every hostile input through every command and endpoint; models load in this process
    monkeypatch.setenv("MODELCTL_WORKERS", "0")
    with probe.serving(manager, monkeypatch):
        for name in inputs:
            if name in LOOKALIKES:  # before any command could register it as a name of its own
                shown = probe.cli("show", name, "--json")
                got = probe.call("GET", f"/api/v1/models/{quote(name, safe='')}")
                if shown.exit_code == 0 or got.status_code != 404:
                    lookalikes.append(f"{name!r}: {shown.stdout:.80} {got.text:.80}")
            for args in cli_calls(name, cwd):
                probe.cli(*args)
            _relink(models, watched)  # `rm escape` takes the link (inside the store, rightly)
            for method, path, kwargs in api_calls(name):
                probe.call(method, path, **kwargs)
            _relink(models, watched)
    manager.close()

    # where secrets could show: a worker's log, exports, status, settings, backend errors
    # (backends that refuse the keys), metrics, the server's log
    monkeypatch.setenv("MODELCTL_WORKERS", "1")
    manager = ModelManager()
    with probe.serving(manager, monkeypatch):
        answer = probe.call("POST", "/v1/chat/completions", json={"model": "tiny", **CHAT})
        for path in ("/api/v1/export", "/api/v1/status", "/api/v1/backends", "/api/v1/system",
                     "/metrics", "/api/v1/logs/tiny", "/api/v1/installs", "/api/tags"):  # fmt: skip
            probe.call("GET", path)
        for model in ("openai/gpt-4o", "anthropic/claude-3-5-sonnet-latest"):
            probe.call("POST", "/v1/chat/completions", upstream=True, json={"model": model, **CHAT})
            probe.call("POST", "/api/chat", upstream=True, json={"model": model, **CHAT})
        probe.call("POST", "/api/v1/installs", upstream=True, json={"model": "hf:org/gated-repo"})
        probe.call("POST", "/api/v1/sync", json={})
        for args in (["export"], ["export", "r4-export.json"], ["config"], ["config", "--json"],
                     ["config", "get", "api_key"], ["config", "get", "openai_api_key"],
                     ["backends", "--json"], ["doctor", "--json"], ["sync"], ["ps"],
                     ["pull", "hf:org/gated-repo"], ["logs", "tiny"]):  # fmt: skip
            probe.cli(*args)
    manager.close()

    touched = differences(before, fingerprint(layout["tmp"], stores))
    worker_logs = list((layout["home"] / "logs").rglob("*.log"))
    stored = [p.read_bytes().decode("utf-8", "replace") for p in files_under(layout["home"], cwd)]
    leaks = [
        f"{secret} in {text[:200]!r}"
        for text in [*probe.seen, caplog.text, *stored]
        for secret, value in SECRETS.items()
        if value in text
    ]
    figures(
        "R4 hostile names", inputs=len(inputs), kinds=len(kinds),
        calls=probe.cli_calls + probe.api_calls, cli_calls=probe.cli_calls,
        api_calls=probe.api_calls, files_touched_outside=len(touched), secrets_leaked=len(leaks),
        server_errors=len(probe.server_errors), tracebacks=len(probe.tracebacks),
        lookalikes_resolved=len(lookalikes), seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    assert touched == []
    assert leaks == []
    assert probe.server_errors == []
    assert probe.tracebacks == []
    assert lookalikes == []
    assert probe.long_lines == []
    assert (models / "tiny.gguf").is_file() and (watched / "sentinel.gguf").is_file()
    assert answer.status_code == 200, answer.text  # a worker ran: its log was scanned
    assert worker_logs


def _relink(models: Path, watched: Path) -> None:
    if not (models / "escape.gguf").is_symlink():
        (models / "escape.gguf").symlink_to(watched / "sentinel.gguf")
