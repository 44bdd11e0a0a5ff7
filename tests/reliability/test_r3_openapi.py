"""R3: schemathesis over the whole served OpenAPI document: no request may get a server error,
and no answer may break the document (status code, content type, headers, body, each event of
a stream).

Three runs share one server, with a tiny real GGUF model (`tiny`, alias `t`):
- every operation, with valid and invalid requests (nested bodies included);
- the streaming operations (OpenAI's chat and text completions, Ollama's chat and generate)
  with `t` answering, streamed or not as generated, each event or line checked;
- sequences along the document's links: a model added, then read, changed, found by tag, alias
  and group, shown, checked and deleted, a call of it recorded and counted; an install job
  started, then read, followed to its end and cancelled.

The backends are loopback addresses that refuse (Ollama, LM Studio, OpenAI) and a Hub with no
repositories: pulls, installs and sync run too, and a pull that cannot reach its backend or
find its model there is the 502 the document gives (counted apart, as refused).
`GET /api/v1/events` streams until the client leaves: it is read for half a second.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Flaky, Unsatisfiable
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ensure_resource_availability,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup, ServerError

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.server import create_app
from tests.protocol_servers import FakeHub, serve
from tests.reliability.conftest import scale

EXAMPLES = scale(12, 150)  # per operation and generation mode
STREAM_EXAMPLES = scale(12, 100)  # per streaming operation, with the model answering
SEQUENCES = scale(25, 300)  # stateful runs
STEPS = scale(8, 20)  # the most steps in one run
MAX_TOKENS = 16  # an answer's length, at most, where the model answers
EVENTS = "/api/v1/events"
STREAMING = (
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /api/chat",
    "POST /api/generate",
    "POST /v1/messages",
    "POST /v1/responses",
)
UPSTREAM = ("POST /api/pull",)  # reaches a backend, which refuses here: 502 by design
UNSUPPORTED = ("POST /api/push",)  # modelctl pushes to no registry: 501 by design
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused
NDJSON = "application/x-ndjson"


def json_lines_conformance(ctx: Any, response: Any, case: Any) -> None:
    """Ollama's streams, each line against the document's `itemSchema` for them (schemathesis
    checks server-sent events itself, not newline-delimited JSON)."""
    media = (response.headers.get("content-type") or [""])[0]
    if not media.startswith(NDJSON):
        return
    content = case.operation.definition.raw["responses"][str(response.status_code)]["content"]
    validator = jsonschema_rs.validator_for(content[NDJSON]["itemSchema"])
    for number, line in enumerate(response.content.splitlines(), 1):
        for error in validator.iter_errors(json.loads(line)):
            raise AssertionError(f"line {number}: {error.message}: {line[:200]!r}")


def not_a_server_error_here(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, but the 502 of an operation that reaches a backend that refuses by design."""
    if case.operation.label in UPSTREAM and response.status_code == 502:
        return
    if case.operation.label in UNSUPPORTED and response.status_code == 501:
        return
    not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_here,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    json_lines_conformance,
]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    for name in ("OLLAMA_HOST", "LMSTUDIO_URL", "OPENAI_BASE_URL"):
        monkeypatch.setenv(name, REFUSED)
    # a Hub with no repositories: the Hub's client retries a refused connection for 23 s
    with serve(FakeHub()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub)
        manager = ModelManager()
        manager.sync(only=["llamacpp"])
        manager.registry.alias("t", "tiny")
        yield create_app(manager, restore=False, reaper_interval=None, hosts=("testserver",))
        manager.close()


class Tally:
    """What the runs saw: statuses, streams, and each kind of failure once per operation."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.refused = 0
        self.streamed = 0
        self.violations = 0  # answers that break the document
        self.failures: dict[tuple[str, str], str] = {}

    def send(self, case: Any, **kwargs: Any) -> Any:
        """The call; one that raises instead of answering (a 500, which the in-process client
        raises again, or a hang) is noted first."""
        if case.operation.path == EVENTS:
            kwargs["timeout"] = 0.5  # it streams until the client leaves: what came by then
        try:
            return case.call(**kwargs)
        except Exception as exc:
            self.statuses[500] += 1
            self.note(case, type(exc).__name__, repr(exc))
            raise

    def call(self, case: Any) -> None:
        with contextlib.suppress(Exception):  # noted: shrinking it would replay a changed server
            self.judge(case, self.send(case))

    def judge(self, case: Any, response: Any, **more: Any) -> None:
        self.statuses[response.status_code] += 1
        self.refused += case.operation.label in UPSTREAM and response.status_code == 502
        self.refused += case.operation.label in UNSUPPORTED and response.status_code == 501
        media = (response.headers.get("content-type") or [""])[0]
        self.streamed += media.startswith(("text/event-stream", NDJSON))
        try:
            case.validate_response(response, checks=CHECKS, **more)
        except FailureGroup as group:
            failures = list(group.exceptions)
        except Failure as failure:
            failures = [failure]
        else:
            return
        self.violations += any(not isinstance(f, ServerError) for f in failures)
        for failure in failures:
            self.note(case, type(failure).__name__, f"{failure.title}: {failure.message}")

    def note(self, case: Any, kind: str, detail: str) -> None:
        text = f"{case.as_curl_command()[:1500]}\n{detail[:800]}"
        self.failures.setdefault((kind, case.operation.label), text)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500) - self.refused

    def report(self) -> str:
        return "\n\n".join(
            f"{kind}, {label}:\n{text}" for (kind, label), text in self.failures.items()
        )


def _settings(examples: int, **more: Any) -> settings:
    return settings(
        max_examples=examples, deadline=None, database=None, derandomize=scale(True, False),
        suppress_health_check=list(HealthCheck), **more,
    )  # fmt: skip


def _run(strategy: Any, examples: int, test: Any) -> None:
    @given(case=strategy)
    @_settings(examples)
    def run(case: Any) -> None:
        test(case)

    run()


def _answered(case: Any) -> None:
    """`t` answers, in at most MAX_TOKENS tokens: the tiny model's noise streams slowly (most
    of its bytes are not UTF-8 alone, and llama-cpp-python decodes again what it holds back)."""
    body = case.body
    if not isinstance(body, dict):
        return
    body["model"] = "t"
    if case.operation.path.startswith("/v1/"):
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if not isinstance(body.get(name), int) or body[name] > MAX_TOKENS:
                body[name] = MAX_TOKENS
        return
    options = dict(body["options"]) if isinstance(body.get("options"), dict) else {}
    asked = options.get("num_predict")
    if not isinstance(asked, int) or not 0 < asked <= MAX_TOKENS:
        options["num_predict"] = MAX_TOKENS
    body["options"] = options


def _links(document: dict[str, Any]) -> int:
    return sum(
        len(response.get("links", {}))
        for path in document["paths"].values()
        for operation in path.values()
        for response in operation["responses"].values()
    )


def test_r3_schemathesis_over_the_whole_document(app, figures) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(p) for p in app.openapi()["paths"].values())
    tally = Tally()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run(operation.as_strategy(mode), EXAMPLES, tally.call)
            except Unsatisfiable:  # an operation with no inputs has no invalid request
                assert mode is GenerationMode.NEGATIVE

    def answered(case: Any) -> None:
        _answered(case)
        tally.call(case)

    streaming = [op for op in operations if op.label in STREAMING]
    assert len(streaming) == len(STREAMING)
    for operation in streaming:
        _run(operation.as_strategy(GenerationMode.POSITIVE), STREAM_EXAMPLES, answered)

    steps = linked = sequences = restarts = 0

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            nonlocal steps, linked
            steps += 1
            linked += input.transition is not None  # a value from an earlier answer, by a link
            return super().step(input)

        def call(self, case: Any, **kwargs: Any) -> Any:
            return tally.send(case, **kwargs)

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            more = {"additional_checks": [ensure_resource_availability], "recorder": self.recorder}
            tally.judge(case, response, **more)

        def teardown(self) -> None:
            nonlocal sequences
            sequences += 1
            super().teardown()

    while sequences < SEQUENCES:
        left = SEQUENCES - sequences
        try:
            run_state_machine_as_test(
                Sequences, settings=_settings(left, stateful_step_count=STEPS)
            )
            break
        except Exception as exc:
            # the server's state is not what it was when Hypothesis first drew these steps, so
            # it cannot replay them (schemathesis's own runner starts afresh too); a failure
            # found on the way is noted already
            if not isinstance(exc, Flaky) and not tally.failures:
                raise
            restarts += 1
            assert restarts <= 10, "the sequences cannot be replayed"

    figures(
        "R3 schemathesis",
        operations=len(operations),
        links=_links(app.openapi()),
        requests=tally.statuses.total(),
        server_errors=tally.server_errors,
        schema_violations=tally.violations,
        stateful_sequences=sequences,
        stateful_steps=steps,
        linked_steps=linked,
        streamed=tally.streamed,
        refused=tally.refused,
    )
    assert not tally.failures, tally.report()
    assert tally.server_errors == 0
    assert tally.streamed > 0 and linked > 0
