"""R2: downloads cut at random points, and pulls killed at random points, then resumed.

Protocol test: the Hugging Face Hub is a loopback server that speaks its download protocol
(tests/protocol_servers.py). Three kinds of trial, each at random byte offsets:
- the connection drops (once or several times) and the pull resumes within the same call;
- the hub goes down after a drop: the pull fails, then a later pull resumes the file;
- a `modelctl pull` process is killed with SIGKILL while the hub holds its download part-way
  (the hub signals when it has sent that many bytes), then a new pull resumes it.
After every step no model may be marked installed whose file fails its sha256, and no model may
be half-installed (a record marked installed without its whole file, or a file under its real
name that is not whole).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import ModelctlError
from tests.protocol_servers import FakeHub, Handler, serve
from tests.reliability.conftest import scale

REPO, FILE = "org/Tiny-GGUF", "Tiny-Q8_0.gguf"


class CuttingHub(FakeHub):
    """FakeHub that drops each GET of the model file after the next offset in `cuts` (bytes of
    that response), and optionally holds at `hold` bytes until `release` is set."""

    def __init__(self, content: bytes) -> None:
        super().__init__(repos={REPO: {FILE: content}})
        self.cuts: list[int] = []
        self.hold: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def send_file(self, h: Handler, filename: str, content: bytes) -> Any:
        if h.command == "GET" and filename == FILE:
            if self.hold is not None:
                return self._held(h, content)
            if self.cuts:
                self.cut_after = self.cuts.pop(0)
                try:
                    return super().send_file(h, filename, content)
                finally:
                    self.cut_after = None  # an offset past this response's end is not kept
        return super().send_file(h, filename, content)

    def _held(self, h: Handler, content: bytes) -> None:
        start = 0
        if h.headers.get("Range", "").startswith("bytes="):
            start = int(h.headers["Range"].removeprefix("bytes=").split("-")[0] or 0)
        body = content[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("X-Repo-Commit", self.commit)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        h.end_headers()
        h.wfile.write(body[: self.hold])
        h.wfile.flush()
        self.holding.set()
        self.release.wait(60)
        h.close_connection = True


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    content = write_llama(tmp_path / "src.gguf", TinySpec(dtype="Q8_0")).read_bytes()
    hub = CuttingHub(content)
    with serve(hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(tmp_path / "models"))
        try:
            yield hub, content, tmp_path / "models" / "org__Tiny-GGUF" / FILE
        finally:
            hub.release.set()


def audit(final: Path, content: bytes) -> tuple[int, int]:
    """(installed files that fail their sha256, half-installed models), from the registry and
    the model folder as another process would see them."""
    want = hashlib.sha256(content).hexdigest()
    bad = half = 0
    with ModelManager() as m:
        for model in list(m.registry.values()):
            if model.backend != "llamacpp" or not model.installed:
                continue
            path = Path(model.location)
            if not path.is_file():
                half += 1
            elif hashlib.sha256(path.read_bytes()).hexdigest() != want:
                bad += 1
    if final.exists() and hashlib.sha256(final.read_bytes()).hexdigest() != want:
        half += 1  # a file under its real name must be whole
    return bad, half


def pull() -> None:
    with ModelManager() as m:
        m.install_model(f"hf:{REPO}", quantization="Q8_0")


def forget(final: Path) -> None:
    """Back to nothing installed: the next trial starts clean."""
    with ModelManager() as m:
        for model in list(m.registry.values()):
            m.registry.store.delete(model.id)
    for path in final.parent.glob("*"):
        path.unlink()


def test_cut_and_killed_downloads_never_leave_a_bad_or_half_installed_model(world, figures) -> None:
    hub, content, final = world
    rng = random.Random(1203)
    size = len(content)
    trials = scale(12, 60)
    stats = {"trials": 0, "cuts": 0, "kills": 0, "failed_pulls": 0, "resumed_installs": 0}
    bad = half = 0
    started = time.monotonic()
    for trial in range(trials):
        kind = ("resume", "down", "kill")[trial % 3]
        stats["trials"] += 1
        if kind == "resume":  # up to two drops, each resumed by the same call (3 attempts)
            hub.cuts = sorted(rng.sample(range(1, size - 1), rng.randint(1, 2)))
            stats["cuts"] += len(hub.cuts)
            pull()
        elif kind == "down":
            hub.cut_after, hub.down_after_cut = rng.randint(1, size - 1), True
            stats["cuts"] += 1
            with pytest.raises(ModelctlError, match="resume"):
                pull()
            stats["failed_pulls"] += 1
            b, h = audit(final, content)
            bad, half = bad + b, half + h
            hub.down = hub.down_after_cut = False
            pull()
        else:
            hub.hold, hub.cut_after = rng.randint(1, size - 1), None
            hub.holding.clear()
            hub.release.clear()
            child = subprocess.Popen(
                [sys.executable, "-m", "modelctl", "pull", f"hf:{REPO}", "--quant", "Q8_0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 60
                while not hub.holding.wait(0.5):  # or the pull ended on its own: say why
                    assert child.poll() is None, f"the pull ended: {child.communicate()[1]}"
                    assert time.monotonic() < deadline, "the pull never reached the hub"
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
            finally:
                hub.hold = None
                hub.release.set()
            stats["kills"] += 1
            b, h = audit(final, content)
            bad, half = bad + b, half + h
            pull()
        stats["resumed_installs"] += 1
        b, h = audit(final, content)
        bad, half = bad + b, half + h
        assert final.read_bytes() == content
        forget(final)
    resumed = sum(
        1 for method, path, headers in hub.requests
        if method == "GET" and path.endswith(FILE) and "Range" in headers
    )  # fmt: skip
    figures(
        "R2 cut downloads", **stats, range_requests=resumed, bad_installed_files=bad,
        half_installed_models=half, seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    assert (bad, half) == (0, 0)
    assert resumed >= stats["cuts"]  # every cut download went on from where it stopped
