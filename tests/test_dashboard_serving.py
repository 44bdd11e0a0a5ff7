"""How the server serves the dashboard's files: the page at `/` for a browser and one line for
a program, the files from the package with their licences, compressed and revalidated, outside
the API key but inside the Host and Origin rules, and forbidden to frame or inline scripts.
The page itself is tested in a real Chromium (tests/ui/)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelctl.cli import app as cli
from modelctl.manager import ModelManager
from modelctl.server.dashboard import assets
from tests.live import running

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Encoding": "gzip"}
UI = Path(__file__).resolve().parents[1] / "src" / "modelctl" / "server" / "ui"


@pytest.fixture
def manager() -> Iterator[ModelManager]:
    m = ModelManager()
    yield m
    m.close()


def test_a_browser_gets_the_page_and_a_program_one_line(manager: ModelManager) -> None:
    with running(manager) as url:
        page = httpx.get(url + "/", headers=BROWSER)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js">' in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy  # no inline script can run in it
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        # Ollama's clients, curl: the line they check for
        assert httpx.get(url + "/").text == "modelctl is running\n"
        assert httpx.head(url + "/").status_code == 200


def test_every_file_the_page_loads_is_served_from_the_package(manager: ModelManager) -> None:
    html = (UI / "index.html").read_text()
    wanted = re.findall(r'(?:src|href)="/ui/([^"]+)"', html)
    wanted += re.findall(r'from "/ui/([^"]+)"', (UI / "app.js").read_text())
    wanted += re.findall(r'import\("/ui/([^"]+)"\)', (UI / "app.js").read_text())
    assert {"app.js", "style.css", "vendor/preact-htm.js", "vendor/uPlot.js"} <= set(wanted)
    with running(manager) as url:
        for name in wanted:
            answer = httpx.get(f"{url}/ui/{name}", headers=BROWSER)
            assert answer.status_code == 200, name
            assert answer.content == (UI / name).read_bytes(), name  # httpx decompressed it
        js = httpx.get(url + "/ui/app.js", headers={"Accept-Encoding": "gzip"})
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert js.headers["content-encoding"] == "gzip"
        assert int(js.headers["content-length"]) < len((UI / "app.js").read_bytes()) / 2
        plain = httpx.get(url + "/ui/app.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        # revalidated by its ETag: 304 and no body while it has not changed
        again = httpx.get(url + "/ui/app.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        missing = httpx.get(url + "/ui/../../pyproject.toml")
        assert missing.status_code == 404
        assert httpx.get(url + "/ui/nothing.js").status_code == 404


def test_the_vendored_libraries_ship_with_their_licences() -> None:
    files = assets()
    for name in ("htm-3.1.1.txt", "uplot-1.6.32.txt", "preact-10.5.13.txt"):
        assert "Permission is hereby granted" in files[f"vendor/licenses/{name}"].body.decode() or (
            "Apache License" in files[f"vendor/licenses/{name}"].body.decode()
        )
    versions = files["vendor/VERSIONS"].body.decode()
    assert "scripts/vendor-ui.sh" in versions and "uplot 1.6.32" in versions
    script = (UI.parents[3] / "scripts" / "vendor-ui.sh").read_text()
    assert "HTM=3.1.1" in script and "UPLOT=1.6.32" in script  # the versions it pins
    assert gzip.decompress(files["app.js"].compressed) == files["app.js"].body


def test_the_page_needs_no_key_but_the_api_does(manager: ModelManager) -> None:
    """The files hold no data: a browser gets the page, which asks for the key; every API call
    needs it, as before."""
    with running(manager, api_key="sk-local") as url:
        assert httpx.get(url + "/", headers=BROWSER).status_code == 200
        assert httpx.get(url + "/ui/app.js").status_code == 200
        assert httpx.get(url + "/api/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models").status_code == 401
        keyed = httpx.get(url + "/api/v1/models", headers={"Authorization": "Bearer sk-local"})
        assert keyed.status_code == 200


def test_the_host_and_origin_rules_hold_for_the_page(manager: ModelManager) -> None:
    """A rebound name (DNS rebinding) gets no page either, and a foreign page cannot read it."""
    with running(manager) as url:
        port = url.rsplit(":", 1)[1]
        rebound = httpx.get(url + "/", headers={**BROWSER, "Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and "evil.example" in rebound.text
        foreign = httpx.get(url + "/ui/app.js", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        own = httpx.get(url + "/ui/app.js", headers={"Origin": url})
        assert own.status_code == 200


def test_modelctl_ui_names_the_dashboard_or_says_how_to_start_a_server(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(manager) as url:
        monkeypatch.setenv("MODELCTL_SERVER", url)
        shown = CliRunner().invoke(cli, ["ui", "--print"])
        assert shown.exit_code == 0, shown.output
        assert shown.output.strip() == url + "/"
    monkeypatch.setenv("MODELCTL_SERVER", "http://127.0.0.1:9")
    gone = CliRunner().invoke(cli, ["ui", "--print"])
    assert gone.exit_code != 0
    assert "no modelctl server at http://127.0.0.1:9" in gone.output
    assert "modelctl serve" in gone.output
