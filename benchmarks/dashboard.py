"""Dashboard benchmark: the Models page over 100,000 models, in the real Chromium.

    python benchmarks/dashboard.py                  # 100,000 models
    python benchmarks/dashboard.py --models 10000   # quicker

Measured through Playwright in Debian's Chromium against a real `modelctl serve` (one process,
the registry on SQLite), each figure the median of `--runs`:
- interactive: navigation start until the first page of 50 rows is in the table (every script
  loaded and run, the data fetched and drawn: the page answers clicks from then on), with a
  cold cache (a new browser context) and a warm one (files revalidated by ETag: 304s);
- bytes: what the browser downloaded for it, compressed, as the Resource Timing API counts it
  (transferSize: headers and bodies), cold;
- search, next page, sort: from the input or click until the table shows the answer.

Targets (issue "dashboard"): interactive under 1 s and under 300 KB compressed on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.registry import synthetic
from tests.live import serve_process
from tests.ui.conftest import CHROMIUM_ARGS, chromium

ROWS = "document.querySelectorAll('tbody tr').length"
SHOWN = (
    f"() => {ROWS} === 50 && document.getElementById('model-count').textContent.endsWith('models')"
)
BYTES = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const files = performance.getEntriesByType('resource');
  return {
    total: nav.transferSize + files.reduce((n, e) => n + e.transferSize, 0),
    decoded: nav.decodedBodySize + files.reduce((n, e) => n + e.decodedBodySize, 0),
    files: files.length + 1,
  };
}"""


def timed(page, action, condition: str) -> float:
    """ms from `action` until `condition` holds, on the page's own clock."""
    page.evaluate("window.__t0 = performance.now()")
    action()
    page.wait_for_function(f"() => {condition}", timeout=60_000)  # a function: CSP allows no eval
    return page.evaluate("performance.now() - window.__t0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        document = Path(tmp) / "models.json"
        document.write_text(json.dumps({"models": synthetic(args.models)}))
        env = {**os.environ, "MODELCTL_HOME": str(home), "MODELCTL_MODEL_DIRS": str(tmp)}
        env.pop("MODELCTL_API_KEY", None)
        subprocess.run(
            [sys.executable, "-m", "modelctl", "import", str(document)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        proc, url = serve_process(env)
        try:
            results = run(sync_playwright, url, args.runs)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"Models page over {args.models:,} models (median of {args.runs}, Chromium):")
    for name, value, target in results:
        mark = "" if target is None else ("  (target met)" if value < target else "  (MISSED)")
        print(f"  {name:<44} {value:>10,.1f}{mark}")


def run(sync_playwright, url: str, runs: int) -> list[tuple[str, float, float | None]]:
    cold, warm, sizes, search, paging, sorting = [], [], [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = browser.new_context()
            page = context.new_page()
            page.goto(url + "/#/models")
            page.wait_for_function(SHOWN, timeout=60_000)
            cold.append(page.evaluate("performance.now()"))
            sizes.append(page.evaluate(BYTES))
            page.reload()
            page.wait_for_function(SHOWN, timeout=60_000)
            warm.append(page.evaluate("performance.now()"))
            box = page.get_by_label("Search")
            search.append(
                timed(
                    page,
                    lambda box=box: box.fill("model-000042"),
                    f"location.hash.includes('q=model-000042') && {ROWS} > 0 && {ROWS} < 50",
                )
            )
            box.fill("")
            page.wait_for_function(SHOWN, timeout=60_000)
            nxt = page.get_by_role("button", name="Next →")
            shown = "document.body.textContent.includes('51\u2013100 of')"
            paging.append(timed(page, nxt.click, shown))
            header = page.get_by_role("button", name="Parameters")
            sorting.append(
                timed(
                    page,
                    header.click,
                    "document.querySelector('th[aria-sort=ascending]')"
                    "?.textContent.includes('Parameters') && "
                    "document.body.textContent.includes('1\u201350 of')",
                )
            )
            context.close()
        browser.close()
    med = statistics.median
    return [
        ("interactive, cold cache (ms)", med(cold), 1000.0),
        ("interactive, warm cache (ms)", med(warm), 1000.0),
        ("downloaded, compressed (KB)", med(s["total"] for s in sizes) / 1000, 300.0),
        ("  the same, uncompressed (KB)", med(s["decoded"] for s in sizes) / 1000, None),
        ("  files", med(s["files"] for s in sizes), None),
        ("search: typed → rows (ms, incl. 250 ms pause)", med(search), None),
        ("next page → rows (ms)", med(paging), None),
        ("sort by parameters → rows (ms)", med(sorting), None),
    ]


if __name__ == "__main__":
    main()
