"""The dashboard in a real Chromium against a real `modelctl serve`: every page, every action a
person takes there (see conftest.py for the server, the browser and the hub)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import Server, start_server

DASH = "\N{EN DASH}"  # the pager writes f"1{DASH}50 of 300"
TIMEOUT = 60_000  # ms: a load in a worker process on a busy 2-core machine


def tiny_id(server: Server) -> str:
    found = server.get("/api/v1/models?backend=llamacpp&q=tiny")["models"]
    assert len(found) == 1, found
    return found[0]["id"]


def model_link(page: Page, model: str) -> Any:
    return page.get_by_role("link", name=model, exact=True)


def test_models_filter_open_and_tag(server: Server, page: Page, shot: Any) -> None:
    page.goto(server.url + "/#/models")
    expect(page.get_by_text(re.compile(r"^30[0-9] models$"))).to_be_visible()
    shot(page, "models")

    page.get_by_label("Search").fill("multilingual")  # in 43 of the 300 descriptions
    expect(page.get_by_text("43 models", exact=True)).to_be_visible()
    page.get_by_label("Backend").select_option("huggingface")
    expect(page.get_by_text(re.compile(r"^\d+ models$"))).to_have_text("8 models")
    assert "backend=huggingface" in page.url and "q=multilingual" in page.url  # a URL to share
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(8)
    expect(rows.first.get_by_role("cell").nth(1)).to_have_text("huggingface")

    page.get_by_label("Search").fill("")
    page.get_by_label("Backend").select_option("")
    page.get_by_label("Installed").select_option("true")
    expect(page.get_by_text("1 model", exact=True)).to_be_visible()  # the tiny GGUF model
    model = tiny_id(server)
    model_link(page, model).click()

    expect(page.get_by_role("heading", name=re.compile(re.escape(model)))).to_be_visible()
    expect(page.get_by_text("Fit on this machine")).to_be_visible()
    expect(page.get_by_text("weights", exact=True)).to_be_visible()  # the estimate, in parts
    page.get_by_label("new tag").fill("favourite")
    page.get_by_label("new tag").press("Enter")
    expect(page.get_by_role("button", name="remove tag favourite")).to_be_visible()
    assert "favourite" in server.get(f"/api/v1/models/{model}")["tags"]
    page.get_by_label("custom metadata key").fill("owner")
    page.get_by_label("custom metadata value").fill('"dashboard"')
    page.get_by_role("button", name="Set", exact=True).first.click()
    expect(page.get_by_text('"dashboard"')).to_be_visible()
    assert server.get(f"/api/v1/models/{model}")["custom"] == {"owner": "dashboard"}
    shot(page, "model")

    page.goto(server.url + "/#/models?tag=favourite")  # filtered by the new tag, by URL
    expect(page.get_by_text("1 model", exact=True)).to_be_visible()
    expect(model_link(page, model)).to_be_visible()


def test_models_page_by_page_and_sorted(server: Server, page: Page, shot: Any) -> None:
    page.goto(server.url + "/#/models?q=gen/")
    expect(page.get_by_text(f"1{DASH}50 of 300")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(50)
    page.get_by_role("button", name="Next →").click()
    expect(page.get_by_text(f"51{DASH}100 of 300")).to_be_visible()
    expect(page.locator("tbody tr").first.get_by_role("link")).to_have_text("gen/model-00050")
    page.get_by_role("button", name=re.compile("^Model")).click()  # sorted by id, descending
    expect(page.locator("tbody tr").first.get_by_role("link")).to_have_text("gen/model-00299")
    expect(page.get_by_text(f"1{DASH}50 of 300")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Model"))).to_be_focused()  # kept
    shot(page, "sorted")


def test_load_see_running_chat_usage_unload(
    server: Server, page: Page, context: Any, shot: Any
) -> None:
    model = tiny_id(server)
    before = server.get("/api/v1/stats")["overall"]["requests"]  # this test's own count below
    usage = context.new_page()  # the usage page stays open: its chart gains a point live
    usage.goto(server.url + "/#/usage")
    expect(usage.get_by_test_id("requests-total")).to_contain_text(f"{before} (")
    requests_chart = usage.get_by_role("img", name=re.compile("^Requests:"))
    expect(requests_chart).to_have_attribute("data-points", "0")  # no other test chats

    page.goto(server.url + f"/#/models/{model}")
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_text(f"{model} loaded")).to_be_visible(timeout=TIMEOUT)

    page.get_by_role("link", name="Running").click()
    row = page.locator(f'tr[data-model="{model}"]')
    expect(row).to_be_visible()
    expect(row.get_by_role("cell").nth(1)).to_have_text("loaded")
    cell = row.get_by_role("cell").nth(3)  # its worker's measured memory, as the API says it
    expect(cell).to_have_text(re.compile(r"^\d+ MiB$"))
    measured = server.get("/api/v1/loaded")["models"][0]["measured"] / 2**20
    assert 0.8 * measured < int(cell.inner_text().split()[0]) < 1.2 * measured + 1
    expect(row.get_by_role("cell").nth(7)).to_have_text(re.compile(r"\d+m \d\ds|\d+s"))
    row.get_by_role("button", name=f"worker log of {model}").click()
    expect(page.get_by_label("worker log", exact=True)).to_contain_text("starting")
    shot(page, "running")

    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model", exact=True).fill(model)
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Message").fill("Hello there")
    with page.expect_response("**/v1/chat/completions") as sent:
        page.get_by_label("Message").press("Enter")
    assert sent.value.request.post_data_json["stream"] is True  # the answer comes as a stream
    assert sent.value.headers["content-type"].startswith("text/event-stream")
    answer = page.locator('.msg[data-role="assistant"]').last
    expect(answer.locator(".stats")).to_contain_text("tokens/s", timeout=TIMEOUT)
    stats = answer.locator(".stats").inner_text()
    assert answer.inner_text().replace(stats, "").strip() not in ("", "…")
    expect(page.locator('.msg[data-role="user"]')).to_have_text("Hello there")
    page.get_by_label("compare with a second model").check()  # the same prompt to both
    page.get_by_role("combobox", name="Second model").fill(model)
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Message").fill("Side by side")
    page.get_by_role("button", name="Send").click()
    for side in ("first model", "second model"):
        transcript = page.get_by_role("log", name=f"{side} transcript")
        expect(transcript.locator(".stats")).to_contain_text("tokens/s", timeout=TIMEOUT)
        expect(transcript.locator('.msg[data-role="user"]')).to_have_text("Side by side")
    shot(page, "playground")

    expect(requests_chart).not_to_have_attribute("data-points", "0", timeout=TIMEOUT)
    total = usage.get_by_test_id("requests-total")
    expect(total).to_contain_text(f"{before + 3} (0 failed)", timeout=TIMEOUT)
    expect(usage.get_by_role("cell", name=model, exact=True).first).to_be_visible()
    shot(usage, "usage")
    with usage.expect_download() as download:
        usage.get_by_role("button", name="Export CSV").click()
    assert download.value.suggested_filename == "modelctl-usage.csv"
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("at,model,")
    assert len(lines) == 1 + before + 3  # the header, and every request
    assert all(f",{model}," in line for line in lines[-3:])

    page.get_by_role("link", name="Running").click()
    page.get_by_role("button", name=f"unload {model}").click()
    expect(page.locator(f'tr[data-model="{model}"]')).to_have_count(0, timeout=TIMEOUT)
    expect(page.get_by_text("Nothing is loaded")).to_be_visible()


def test_pull_from_the_hub_with_progress_then_delete_with_plan(
    server: Server, page: Page, shot: Any
) -> None:
    page.goto(server.url + "/#/models")
    page.get_by_label("Reference").fill("hf:org/Pulled-GGUF")
    page.get_by_role("button", name="Pull", exact=True).click()
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("value", "100", timeout=TIMEOUT)
    expect(page.get_by_text("Installed 100%")).to_be_visible()
    shot(page, "pulled")
    installed = server.get("/api/v1/models?installed=true&q=pulled")["models"]
    assert [m["installed"] for m in installed] == [True]
    model = installed[0]["id"]

    page.goto(server.url + "/#/models?installed=true&q=pulled")
    model_link(page, model).click()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    # the plan: the paths (its folder in the Hugging Face cache) and the bytes it frees
    expect(dialog.get_by_label("paths to delete")).to_contain_text("hub/models--org--Pulled-GGUF")
    expect(dialog).to_contain_text(re.compile(r"freeing \d+(\.\d)? [KM]B"))
    shot(page, "delete-plan")
    dialog.get_by_label("also forget its record").check()
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    assert server.get("/api/v1/models?q=pulled")["models"] == []


def test_overview_and_doctor(server: Server, page: Page, shot: Any) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="This machine")).to_be_visible()
    machine = page.get_by_role("region", name="This machine")
    expect(machine.locator("dd").nth(1)).to_contain_text(re.compile(r"free of \d+\.\d GiB"))
    expect(page.get_by_role("img", name=re.compile("^memory: "))).to_be_visible()
    expect(page.get_by_role("cell", name="llamacpp", exact=True)).to_be_visible()
    expect(page.get_by_text("live", exact=True)).to_be_visible()  # the event stream is open
    shot(page, "overview")
    page.get_by_role("link", name="Doctor").click()
    expect(page.get_by_text(re.compile(r"^\d+ ok$"))).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("li .badge").first).to_be_visible()
    shot(page, "doctor")


def test_keyboard_themes_and_a_phone(server: Server, page: Page, shot: Any) -> None:
    page.goto(server.url + "/#/overview")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(3):  # the brand, Overview, Models
        page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Models", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Models", exact=True)).to_have_attribute(
        "aria-current", "page"
    )

    background = "getComputedStyle(document.body).backgroundColor"
    page.get_by_role("button", name=re.compile("^theme: system")).click()  # → dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(background) == "rgb(17, 19, 22)"
    shot(page, "dark")
    page.get_by_role("button", name=re.compile("^theme: dark")).click()  # → light
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert page.evaluate(background) == "rgb(246, 247, 249)"

    page.set_viewport_size({"width": 390, "height": 844})
    loaded = {  # what each page shows once its data is in
        "models": page.locator("tbody tr").first,
        "running": page.get_by_role("heading", name="Loaded models"),
        "usage": page.locator(".uplot").first,
        "playground": page.get_by_label("Message"),
    }
    for name, ready in loaded.items():
        page.goto(server.url + f"/#/{name}")
        expect(ready).to_be_visible()
        wide = page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
        assert wide <= 0, f"{name} scrolls sideways on a phone by {wide} px"
    shot(page, "phone")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from start_server(tmp_path_factory.mktemp("keyed"), key="sekret-123", extra=5)


def test_an_api_key_is_asked_once_and_sent_as_a_bearer_header(
    keyed: Server, page: Page, context: Any, shot: Any
) -> None:
    sent: list[str | None] = []
    page.on(
        "request",
        lambda r: sent.append(r.headers.get("authorization")) if "/api/v1/" in r.url else None,
    )
    page.goto(keyed.url + "/#/models")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This server needs its API key.")
    shot(page, "key")
    dialog.get_by_label("API key").fill("wrong")
    dialog.get_by_role("button", name="Use this key").click()
    expect(dialog).to_contain_text("The server refused that key.")
    dialog.get_by_label("API key").fill("sekret-123")
    dialog.get_by_role("button", name="Use this key").click()
    expect(page.get_by_text("6 models", exact=True)).to_be_visible()  # 5 and the tiny one
    assert "Bearer sekret-123" in sent
    assert context.cookies() == []  # nothing another site's page could make the browser send

    page.reload()  # asked once: kept in this browser
    expect(page.get_by_text("6 models", exact=True)).to_be_visible()
    expect(page.get_by_role("dialog")).to_be_hidden()
