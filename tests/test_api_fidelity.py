"""API fidelity: each API as its official client package uses it, unmodified, against a real
server (`modelctl serve`'s app on a loopback port) and tiny GGUF models loaded by llama.cpp.

Where a remote provider is needed, it is a loopback server that speaks the provider's
documented protocol (tests/protocol_servers.py): a protocol test."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from tests.live import running
from tests.protocol_servers import FakeOpenAI, serve

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def url(tiny_models: Path, tiny_manager: ModelManager) -> Iterator[str]:
    write_llama(tiny_models / "other.gguf", TinySpec(name="Other", layers=3))
    tiny_manager.sync(only=["llamacpp"])
    with running(tiny_manager) as base:
        yield base


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeOpenAI]]:
    """A server in front of a remote OpenAI-compatible provider (a protocol server) serving
    `gpt-4o`: the server's URL, and the provider, which notes what it was sent."""
    fake = FakeOpenAI(key="sk-test", models=["gpt-4o"])
    with serve(fake) as upstream:
        monkeypatch.setenv("OPENAI_BASE_URL", upstream + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as m:
            m.sync(only=["openai"])
            with running(m) as url:
                yield url, fake


# ---------------------------------------------------------------------- Ollama


def test_every_model_has_its_own_digest_and_family(url: str) -> None:
    """Clients key models by digest: one digest for all (the first version's "") merged every
    model into one entry."""
    client = ollama.Client(host=url)
    client.copy("tiny", "tiny-copy")
    listed = {m.model: m for m in client.list().models}
    digests = [m.digest for m in listed.values()]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d or "") for d in digests)
    assert len(set(digests)) == len(listed) == 3
    assert [m.digest for m in client.list().models] == digests  # stable
    assert listed["tiny"].details.family == "llama" and listed["tiny"].details.families == ["llama"]
    assert listed["tiny-copy"].details.parent_model == "tiny"


def test_create_copy_and_delete_derived_models(
    url: str, tiny_models: Path, tiny_manager: ModelManager
) -> None:
    client = ollama.Client(host=url)
    done = client.create(
        model="mario", from_="tiny", system="You are Mario from Super Mario Bros.",
        parameters={"num_predict": 2, "temperature": 0.5, "num_ctx": 256},
    )  # fmt: skip
    assert done.status == "success"
    shown = client.show("mario")
    assert shown.modelfile.startswith(
        '# served by modelctl\nFROM tiny\nSYSTEM """You are Mario from Super Mario Bros."""\n'
    )
    assert shown.parameters == "num_predict 2\ntemperature 0.5"
    assert shown.details.parent_model == "tiny"

    # its defaults apply (num_predict 2: the answer is cut at its length; llama.cpp's count
    # of the tokens includes a few it did not return); its system prompt comes first
    reply = client.chat(model="mario", messages=HELLO)
    assert reply.done_reason == "length" and reply.eval_count <= 8
    gpt = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    plain = gpt.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)
    mario = gpt.chat.completions.create(model="mario", messages=HELLO)
    assert mario.choices[0].finish_reason == "length" and mario.usage.completion_tokens <= 8
    assert mario.usage.prompt_tokens > plain.usage.prompt_tokens
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["mario"].context_length == 256  # num_ctx: the context it loads with
    assert {s["model"]: s for s in tiny_manager.loaded()}["mario"]["options"]["context"] == 256
    tiny_manager.sync(only=["llamacpp"])  # a sync leaves derived models as they are
    assert "mario" in {m.model for m in client.list().models}
    client.copy("mario", "mario2")
    with pytest.raises(ollama.ResponseError) as loop:  # a model never derives from itself
        client.create(model="mario", from_="mario2")
    assert loop.value.status_code == 409 and "mario2 derives from mario" in loop.value.error
    client.delete("mario2")

    # an older client's Modelfile
    modelfile = 'FROM tiny\nSYSTEM """Two\nlines"""\nPARAMETER stop "<|end|>"\nPARAMETER seed 7\n'
    answer = httpx.post(f"{url}/api/create", json={"name": "luigi", "modelfile": modelfile})
    lines = [line for line in answer.text.splitlines() if line]
    assert answer.status_code == 200 and lines[-1] == '{"status": "success"}'
    luigi = client.show("luigi")
    assert 'SYSTEM """Two\nlines"""' in luigi.modelfile
    assert luigi.parameters == 'seed 7\nstop "<|end|>"'

    # deleting a derived model removes its name only; its base is not deleted before it
    with pytest.raises(ollama.ResponseError) as busy:
        client.delete("tiny")
    assert busy.value.status_code == 409 and "luigi, mario derive from tiny" in busy.value.error
    client.delete("mario")
    client.delete("luigi")
    assert (tiny_models / "tiny.gguf").exists()
    assert {m.model for m in client.list().models} == {"tiny", "other"}
    client.delete("tiny")
    assert not (tiny_models / "tiny.gguf").exists()


def test_what_ollama_create_and_push_cannot_do_is_refused_in_words(url: str) -> None:
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as push:
        client.push("tiny")
    assert push.value.status_code == 501 and "does not push models" in push.value.error
    cases = [
        ({"model": "x", "from": "tiny", "parameters": {"mirostat": 1}}, "mirostat is not supp"),
        ({"model": "x", "from": "tiny", "quantize": "q4_K_M"}, "quantizing is not supported"),
        ({"model": "x"}, "from: required"),
        ({"model": "x", "from": "nope"}, "no model named 'nope'"),
        ({"model": "tiny", "from": "other"}, "tiny exists and is not a derived model"),
        ({"model": "x", "modelfile": "FROM tiny\nADAPTER ./lora.gguf"}, "ADAPTER is not supp"),
        ({"model": "x", "from": "tiny", "parameters": {"num_ctx": "big"}}, "num_ctx must be"),
    ]
    for body, words in cases:
        answer = httpx.post(f"{url}/api/create", json={**body, "stream": False})
        assert 400 <= answer.status_code < 500 and words in answer.json()["error"], (body, answer)
    assert "x" not in {m.model for m in client.list().models}


def test_a_derived_models_defaults_reach_the_provider_through_every_api(
    provider: tuple[str, FakeOpenAI],
) -> None:
    """Protocol test: a derived model of a remote OpenAI-compatible model; its system prompt
    and defaults are in what the provider receives, through the OpenAI and Ollama APIs."""
    url, fake = provider
    client = ollama.Client(host=url)
    client.create(model="pirate", from_="gpt-4o", system="Talk like a pirate.",
                  parameters={"temperature": 0.2})  # fmt: skip
    client.chat(model="pirate", messages=HELLO, stream=False)
    gpt = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    gpt.chat.completions.create(model="pirate", messages=HELLO)
    own = [{"role": "system", "content": "Be brief."}, *HELLO]
    gpt.chat.completions.create(model="pirate", messages=own, temperature=1.0)
    sent = fake.bodies[-3:]
    pirate = [{"role": "system", "content": "Talk like a pirate."}, *HELLO]
    assert [b["messages"] for b in sent] == [pirate, pirate, own]
    assert [b["temperature"] for b in sent] == [0.2, 0.2, 1.0]
    assert {b["model"] for b in sent} == {"gpt-4o"}  # the base's name at the provider


# ---------------------------------------------------------------------- OpenAI


def test_a_stream_with_include_usage_ends_with_the_usage(url: str) -> None:
    """`stream_options.include_usage`: a last chunk with no choices and the usage, as the
    OpenAI SDK reads it (the first version ignored it: the SDK saw no usage)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    asked = {"model": "tiny", "messages": HELLO, "max_tokens": 3}
    plain = client.chat.completions.create(**asked)
    chunks = list(
        client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    *answer, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens  # counted as llama.cpp counts
    # at least the 3 asked (cut at its length); llama.cpp samples on to end a character
    assert 3 <= last.usage.completion_tokens <= 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.choices for c in answer) and answer[-1].choices[0].finish_reason == "length"
    assert last.id == answer[0].id and last.model == answer[0].model

    texts = list(
        client.completions.create(
            model="tiny", prompt="Once", max_tokens=2, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert texts[-1].choices == [] and texts[-1].usage.prompt_tokens > 0
    without = list(client.chat.completions.create(**asked, stream=True))
    assert all(c.choices for c in without)  # not asked: no such chunk


# ---------------------------------------------------------------------- Anthropic


def test_the_anthropic_sdk_sends_messages_to_a_local_model(url: str) -> None:
    """Anthropic's Messages API, with its own SDK unmodified: a message, a system prompt,
    streaming (events as Anthropic documents them) and errors in its shape."""
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    message = client.messages.create(model="tiny", max_tokens=3, messages=HELLO)
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny"
    assert message.stop_reason == "max_tokens" and message.id.startswith("msg_")
    assert [block.type for block in message.content] in (["text"], [])
    gpt = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    same = gpt.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)
    assert message.usage.input_tokens == same.usage.prompt_tokens > 0
    assert message.usage.output_tokens > 0

    system = client.messages.create(
        model="tiny", max_tokens=2, system="You are terse.", messages=HELLO
    )
    assert system.usage.input_tokens > message.usage.input_tokens  # the system prompt counted

    with client.messages.stream(model="tiny", max_tokens=3, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == text
    assert final.usage.input_tokens == message.usage.input_tokens and final.usage.output_tokens

    events = [e.type for e in client.messages.create(model="tiny", max_tokens=3, messages=HELLO,
                                                     stream=True)]  # fmt: skip
    assert events[:2] == ["message_start", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[2:-3]) == {"content_block_delta"}

    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=3, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert "no model named 'nope'" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="tiny", max_tokens=0, messages=HELLO)
    assert bad.value.body["type"] == "error" and "max_tokens" in bad.value.body["error"]["message"]


def test_anthropic_tool_turns_reach_the_model_as_chat_messages(
    provider: tuple[str, FakeOpenAI],
) -> None:
    """Protocol test: a tool use and its result, a system prompt in blocks, stop sequences and
    tools arrive at an OpenAI-compatible provider as its own chat fields."""
    import anthropic

    url, fake = provider
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    city = {"type": "object", "properties": {"city": {"type": "string"}}}
    weather = {"name": "weather", "description": "weather", "input_schema": city}
    answer = client.messages.create(
        model="gpt-4o", max_tokens=3, stop_sequences=["\n\n"],
        extra_body={"temperature": 0.5},  # older SDKs' argument; 2.x has none
        system=[{"type": "text", "text": "Be brief."}], tools=[weather],
        tool_choice={"type": "tool", "name": "weather"},
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3 C"}]},
        ],
    )  # fmt: skip
    assert answer.content[0].text == "Hi there!" and answer.stop_reason == "end_turn"
    sent = fake.bodies[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "toolu_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3 C"},
    ]  # fmt: skip
    assert sent["stop"] == ["\n\n"] and sent["temperature"] == 0.5 and sent["max_tokens"] == 3
    assert sent["tools"][0]["function"]["parameters"] == weather["input_schema"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


def test_logprobs_from_llama_cpp(url: str) -> None:
    """logprobs and top_logprobs: the model is loaded again keeping every position's logits
    (counted in the budget), and each token comes with its log probability (the first
    version dropped them without a word)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=3, logprobs=True, top_logprobs=2
    )
    tokens = answer.choices[0].logprobs.content
    assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3,
                                                 logprobs=True, stream=True))  # fmt: skip
    assert any(c.choices and c.choices[0].logprobs for c in chunks)
    text = client.completions.create(model="tiny", prompt="Once", max_tokens=3, logprobs=2)
    assert text.choices[0].logprobs.tokens and len(text.choices[0].logprobs.top_logprobs[0]) == 2
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=HELLO, top_logprobs=21)


def test_logprobs_from_a_runtime_that_gives_none_are_refused_in_words() -> None:
    """Protocol test: an Ollama daemon's model reports no logprobs: a 400 that says so."""
    from modelctl.record.errors import NotSupported
    from tests.protocol_servers import FakeOllama, OllamaModel

    fake = FakeOllama(models={"llama3.2:3b": OllamaModel("llama3.2:3b")})
    with serve(fake) as daemon, pytest.MonkeyPatch.context() as env:
        env.setenv("OLLAMA_HOST", daemon)
        with ModelManager() as m:
            m.sync(only=["ollama"])
            with pytest.raises(NotSupported, match="cannot give logprobs"):
                m.chat(HELLO, "llama3.2:3b", logprobs=True)
            assert m.chat(HELLO, "llama3.2:3b", max_tokens=3)["choices"]  # the rest works


def test_a_chat_model_embeds_with_the_sdks_default_encoding(url: str) -> None:
    """Embeddings from a GGUF chat model (the first version refused: "not loaded for
    embeddings"): it is loaded again for them; the OpenAI SDK asks for base64 by default."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)  # loaded for chat
    vectors = client.embeddings.create(model="tiny", input=["a cat", "stocks fell"])
    assert [len(v.embedding) for v in vectors.data] == [64, 64]
    assert vectors.data[0].embedding != vectors.data[1].embedding
    floats = client.embeddings.create(model="tiny", input="a cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, rel=1e-5)
    reply = ollama.Client(host=url).embed(model="tiny", input="a cat")
    assert reply.embeddings[0] == pytest.approx(vectors.data[0].embedding, rel=1e-5)
    legacy = ollama.Client(host=url).embeddings(model="tiny", prompt="a cat")  # the older call
    assert list(legacy.embedding) == pytest.approx(vectors.data[0].embedding, rel=1e-5)
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)  # and back


def test_a_json_schema_becomes_a_grammar_on_llama_cpp(url: str) -> None:
    """`response_format` with a JSON schema (OpenAI) and `format` with one (Ollama): a tiny
    random model answers JSON of that shape, because llama.cpp samples under a grammar made
    from the schema (before, the schema was passed on and ignored: its answers were noise)."""
    import json

    import jsonschema_rs

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                       "count": {"type": "integer"}},
        "required": ["answer", "count"], "additionalProperties": False,
    }  # fmt: skip
    validator = jsonschema_rs.validator_for(schema)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    for seed in range(3):
        answer = client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=60, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        )  # fmt: skip
        assert answer.choices[0].finish_reason == "stop"
        validator.validate(json.loads(answer.choices[0].message.content))
    reply = ollama.Client(host=url).chat(
        model="tiny", messages=HELLO, format=schema, options={"num_predict": 60, "seed": 1}
    )
    validator.validate(json.loads(reply.message.content))
    anything = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=60, seed=2,
        response_format={"type": "json_object"},
    )  # fmt: skip
    # any JSON object: the noise runs past 60 tokens inside it, but it is one
    assert anything.choices[0].message.content.lstrip().startswith("{")


def test_n_choices_come_one_after_another(url: str) -> None:
    """`n` up to 8: each choice a generation of its own (a seed given goes up by one a choice),
    in one answer or one stream; beyond 8, a 400 that says so."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    one = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, seed=5)
    three = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, seed=5, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.choices[0].message.content == one.choices[0].message.content  # the same seed
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert three.usage.completion_tokens >= 3 * 3
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=3, seed=5, n=2, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [0, 1] and chunks[-1].choices == []
    assert len({c.id for c in chunks}) == 1  # one stream, as OpenAI sends n choices
    assert chunks[-1].usage.prompt_tokens == one.usage.prompt_tokens
    texts = client.completions.create(model="tiny", prompt="Once", max_tokens=2, n=2)
    assert [c.index for c in texts.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="tiny", messages=HELLO, n=9)
    assert "n: " in many.value.message and "8" in many.value.message


# ---------------------------------------------------------------------- other clients


def test_langchain_ollama_chats_and_embeds_as_with_an_ollama_daemon(url: str) -> None:
    """LangChain's Ollama integration, configured as its users configure it for a daemon."""
    from langchain_ollama import ChatOllama, OllamaEmbeddings

    chat = ChatOllama(model="tiny", base_url=url, num_predict=3, seed=1)
    reply = chat.invoke("Hello!")
    assert reply.response_metadata["done_reason"] == "length"
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0
    pieces = list(chat.stream("Hello!"))
    assert "".join(p.content for p in pieces) == reply.content  # the same seed, streamed
    vectors = OllamaEmbeddings(model="tiny", base_url=url).embed_documents(["a cat", "a dog"])
    assert [len(v) for v in vectors] == [64, 64] and vectors[0] != vectors[1]


def test_instructor_extracts_a_typed_answer_from_a_tiny_model(url: str) -> None:
    """instructor, over the OpenAI SDK pointed at the server, in JSON-schema mode: the schema
    becomes llama.cpp's grammar, so even a tiny random model answers a valid `Verdict`."""
    from typing import Literal

    import instructor
    from pydantic import BaseModel

    class Verdict(BaseModel):
        answer: Literal["yes", "no"]
        confidence: int

    client = instructor.from_openai(
        openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0),
        mode=instructor.Mode.JSON_SCHEMA,
    )
    verdict = client.chat.completions.create(
        model="tiny", response_model=Verdict, max_tokens=60, seed=1, max_retries=0,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
    )  # fmt: skip
    assert isinstance(verdict, Verdict) and verdict.answer in ("yes", "no")


def test_the_responses_api_with_the_openai_sdk(url: str) -> None:
    """OpenAI's Responses API (`client.responses`, which newer OpenAI clients use): a response,
    instructions, a stream of its events, and what it refuses."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    made = client.responses.create(model="tiny", input="Hello!", max_output_tokens=3)
    assert made.object == "response" and made.id.startswith("resp_") and made.model == "tiny"
    assert made.status == "incomplete" and made.incomplete_details.reason == "max_output_tokens"
    assert made.output[0].type == "message" and made.output[0].role == "assistant"
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).chat
    same = chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello!"}],
                                   max_tokens=3)  # fmt: skip
    assert made.usage.input_tokens == same.usage.prompt_tokens
    assert made.usage.total_tokens == made.usage.input_tokens + made.usage.output_tokens
    told = client.responses.create(
        model="tiny", instructions="Be terse.", max_output_tokens=2,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}],
    )  # fmt: skip
    assert told.usage.input_tokens > made.usage.input_tokens  # the instructions came first

    events = list(client.responses.create(model="tiny", input="Hello!", max_output_tokens=3,
                                          stream=True))  # fmt: skip
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert kinds[-1] == "response.incomplete" and "response.output_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text
    assert events[-1].response.usage.input_tokens == made.usage.input_tokens

    # the SDK's helper, which waits for response.completed: an answer that ends by itself,
    # JSON of a schema (text.format), which llama.cpp's grammar makes the tiny model finish
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}  # fmt: skip
    fmt = {"format": {"type": "json_schema", "name": "verdict", "schema": schema}}
    with client.responses.stream(model="tiny", input="Yes?", max_output_tokens=60,
                                 text=fmt) as stream:  # fmt: skip
        final = stream.get_final_response()
    assert final.status == "completed" and json.loads(final.output_text)["answer"] in ("yes", "no")

    with pytest.raises(openai.BadRequestError) as kept:
        client.responses.create(model="tiny", input="Hi", previous_response_id="resp_1")
    assert "modelctl keeps no responses" in kept.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="Hi")


def test_a_model_created_from_uploaded_weights(url: str, tmp_path: Path) -> None:
    """`ollama create NAME -f Modelfile` with `FROM ./file.gguf`: the client uploads the file
    as a blob (`/api/blobs/DIGEST`), then creates the model from it."""
    client = ollama.Client(host=url)
    weights = write_llama(tmp_path / "mine.gguf", TinySpec(name="Mine", layers=3))
    digest = client.create_blob(weights)
    assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 200
    done = client.create(model="mine", files={"mine.gguf": digest}, system="Be brief.",
                         parameters={"num_predict": 2})  # fmt: skip
    assert done.status == "success"
    listed = {m.model: m for m in client.list().models}
    assert listed["mine"].details.format == "gguf" and listed["mine"].details.family == "llama"
    assert 'SYSTEM """Be brief."""' in client.show("mine").modelfile
    reply = client.chat(model="mine", messages=HELLO)
    assert reply.done_reason == "length"
    client.delete("mine")  # its file goes: it was the model's own
    assert "mine" not in {m.model for m in client.list().models}

    # the bytes must be the digest's; a digest not uploaded cannot be created from
    other = "sha256:" + "0" * 64
    wrong = httpx.post(f"{url}/api/blobs/{other}", content=b"not these bytes")
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
    assert httpx.head(f"{url}/api/blobs/{other}").status_code == 404
    missing = httpx.post(f"{url}/api/create", json={"model": "x", "files": {"x.gguf": other}})
    assert missing.status_code == 400 and "was not uploaded here" in missing.json()["error"]
    page = httpx.post(f"{url}/api/blobs/{digest}", content=b"x",
                      headers={"Origin": "http://evil.example"})  # fmt: skip
    assert page.status_code == 403  # a web page cannot upload


# ---------------------------------------------------------------------- tool calls, llama.cpp

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"], "additionalProperties": False}  # fmt: skip
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "description": "today's weather", "parameters": CITY},
}
TIME = {"type": "function", "function": {"name": "time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}  # fmt: skip


@pytest.mark.parametrize(
    ("written", "content", "calls"),
    [
        ('<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>', None,
         [("weather", {"city": "Oslo"})]),
        ('Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
         '<tool_call>{"name": "time", "arguments": {"zone": "UTC"}}</tool_call>',
         "Let me check.", [("weather", {"city": "Oslo"}), ("time", {"zone": "UTC"})]),
        ('[TOOL_CALLS] [{"name": "time", "arguments": {"zone": "CET"}}]', None,
         [("time", {"zone": "CET"})]),
        ('[{"name": "time", "arguments": {"zone": "CET"}}]', None, [("time", {"zone": "CET"})]),
        ('<|python_tag|>{"name": "weather", "parameters": {"city": "Rome"}}', None,
         [("weather", {"city": "Rome"})]),
        ('{"name": "time", "parameters": {"zone": "UTC"}}', None, [("time", {"zone": "UTC"})]),
        ('<tool_call>{"name": "unknown", "arguments": {}}</tool_call>', "same", []),
        ("The weather is fine.", "same", []),
    ],
)  # fmt: skip
def test_tool_calls_are_read_from_each_familys_markers(
    written: str, content: str | None, calls: list[tuple[str, dict[str, str]]]
) -> None:
    from modelctl.backends._tool_calls import parse

    text, found = parse(written, [WEATHER, TIME])
    assert text == (written if content == "same" else content)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found] == (
        calls
    )
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in found)


def test_a_local_model_calls_tools_through_the_openai_sdk(url: str) -> None:
    """tool_choice required (one call, under a grammar) and named (llama-cpp-python's own),
    whole and streamed; even the tiny random model's calls are well-formed."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    asked = {"model": "tiny", "messages": HELLO, "max_tokens": 80, "tools": [WEATHER, TIME]}
    for choice in ("required", {"type": "function", "function": {"name": "time"}}):
        answer = client.chat.completions.create(**asked, tool_choice=choice, seed=3)
        (call,) = answer.choices[0].message.tool_calls
        assert answer.choices[0].finish_reason == "tool_calls"
        arguments = json.loads(call.function.arguments)
        if call.function.name == "time":
            assert arguments["zone"] in ("UTC", "CET")
        else:
            assert call.function.name == "weather" and isinstance(arguments["city"], str)
    chunks = list(client.chat.completions.create(**asked, tool_choice="required", seed=3,
                                                 stream=True))  # fmt: skip
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and
              c.choices[0].delta.tool_calls]  # fmt: skip
    assert deltas and deltas[0][0].function.name in ("weather", "time")
    assert json.loads(deltas[0][0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
