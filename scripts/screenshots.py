"""The README's pictures of the dashboard: docs/dashboard-*.png, taken in Debian's Chromium.

    .venv/bin/python scripts/screenshots.py

A real `modelctl serve` with the example registry (examples/models.json), a tiny generated GGUF
model loaded, a few chats sent through it and a few usage rows recorded, then one picture of
each page.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ui.conftest import CHROMIUM_ARGS, chromium, start_server  # noqa: E402


def call(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def main() -> None:
    from playwright.sync_api import sync_playwright

    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), extra=0)
        s = next(server)
        try:
            examples = json.loads((ROOT / "examples" / "models.json").read_text())
            call(s.url, "/api/v1/import", {"document": examples})
            tiny = s.get("/api/v1/models?backend=llamacpp&q=tiny")["models"][0]["id"]
            call(s.url, "/api/v1/loaded", {"model": tiny, "keep_alive": "30m"})
            for question in ("Hello!", "What is a GGUF file?", "Name three colours."):
                call(s.url, "/v1/chat/completions", {"model": tiny, "max_tokens": 24,
                     "messages": [{"role": "user", "content": question}]})  # fmt: skip
            for model, latency in (("openai/gpt-4o", 0.8), ("llama3.2:3b", 0.3)):
                call(s.url, "/api/v1/usage", {"model": model, "latency": latency,
                     "tokens_in": 120, "tokens_out": 80, "ttft": latency / 4})  # fmt: skip
            take(s.url, tiny, docs, sync_playwright)
        finally:
            next(server, None)
    print("\n".join(str(p.relative_to(ROOT)) for p in sorted(docs.glob("dashboard-*.png"))))


def take(url: str, tiny: str, docs: Path, sync_playwright) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        pages = {
            "overview": ("#/overview", "Backends"),
            "models": ("#/models", "models"),
            "model": ("#/models/llama3.2%3A3b", "Capabilities"),
            "running": ("#/running", "Loaded models"),
            "usage": ("#/usage", "Recent requests"),
            "doctor": ("#/doctor", "Check again"),
        }
        for name, (where, text) in pages.items():
            page.goto(f"{url}/{where}")
            page.get_by_text(text).first.wait_for()
            if name in ("overview", "usage"):
                page.locator(".uplot").first.wait_for()
            page.screenshot(path=str(docs / f"dashboard-{name}.png"))
        page.goto(f"{url}/#/playground?model={tiny}")
        page.get_by_label("compare with a second model").check()
        page.get_by_role("combobox", name="Second model").fill(tiny)
        page.get_by_label("Max tokens").fill("24")
        page.get_by_label("Message").fill("Write a haiku about memory.")
        page.get_by_label("Message").press("Enter")
        page.locator(".stats").nth(1).wait_for(timeout=120_000)
        page.screenshot(path=str(docs / "dashboard-playground.png"))
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        phone.emulate_media(color_scheme="dark")
        phone.goto(f"{url}/#/running")
        phone.get_by_text("Loaded models").wait_for()
        phone.screenshot(path=str(docs / "dashboard-phone-dark.png"))
        browser.close()


if __name__ == "__main__":
    main()
