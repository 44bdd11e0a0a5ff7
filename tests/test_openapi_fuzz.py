"""A short schemathesis run against the served OpenAPI document: generated requests, valid and
not, to every operation; none may get a 5xx.

Operations that never end (the event streams), that reach out to backends (pulls, installs,
sync: here those backends are unreachable on purpose, and their failure is a 502 by design), or
that run many real requests by design (profiles) are left out; tests/test_server.py covers them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.server import create_app

SKIPPED = r"(/events$|/installs|/api/pull|/api/v1/sync|/api/v1/profiles/)"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    manager = ModelManager()
    manager.sync(only=["llamacpp"])
    manager.registry.alias("t", "tiny")
    yield create_app(manager, restore=False, reaper_interval=None, hosts=("testserver",))
    manager.close()


def test_no_request_gets_a_server_error(app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=SKIPPED)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    statuses: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=6, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            def check(case) -> None:
                response = case.call_and_validate(checks=[not_a_server_error])
                statuses.append(response.status_code)

            try:
                check()
            except Unsatisfiable:  # an operation with no inputs has no invalid request
                assert mode is GenerationMode.NEGATIVE
    assert len(statuses) > 200 and max(statuses) < 500
    assert sum(400 <= s < 500 for s in statuses) > 50  # bad input was tried, and refused
