"""The query language, checked by what it selects from a real registry (not by the SQL text)."""

from __future__ import annotations

import pytest

from modelctl.record.errors import InvalidQuery
from modelctl.registry import Registry
from modelctl.registry.query import FIELDS, compile_query, parse_where

LLAMA, CODER, QWEN, GPT, MIXTRAL = (
    "llama3.2:3b",
    "qwen2.5-coder:7b",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "openai/gpt-4o",
    "mixtral:8x7b",
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {LLAMA, CODER, QWEN, GPT, MIXTRAL}),
        ({"backend": "ollama"}, {LLAMA, CODER, MIXTRAL}),
        ({"backend": {"$ne": "ollama"}}, {QWEN, GPT}),
        ({"context_length": {"$gte": 100_000}}, {LLAMA, GPT}),
        ({"context_length": {"$gt": 32768, "$lt": 131072}}, {GPT}),
        ({"parameters": {"$lte": 500_000_000}}, {QWEN}),
        ({"parameters": {"$exists": False}}, {GPT}),
        ({"parameters": {"$ne": 494_032_768}}, {LLAMA, CODER, GPT, MIXTRAL}),
        ({"installed": True}, {LLAMA, GPT}),
        ({"installed": {"$ne": True}}, {CODER, QWEN, MIXTRAL}),
        ({"purpose": {"$in": ["speed", "quality"]}}, {LLAMA, QWEN, GPT, MIXTRAL}),
        ({"purpose": {"$nin": ["speed", "quality"]}}, {CODER}),
        ({"status": "missing"}, {MIXTRAL}),
        ({"quantization": None}, {GPT, MIXTRAL}),
        ({"tags": "prod"}, {LLAMA, GPT}),
        ({"tags": {"$contains": "local"}}, {LLAMA, CODER}),
        ({"tags": {"$in": ["code", "tiny"]}}, {CODER, QWEN}),
        ({"tags": {"$nin": ["local"]}}, {QWEN, GPT, MIXTRAL}),
        ({"tags": {"$ne": "prod"}}, {CODER, QWEN, MIXTRAL}),
        ({"tags": {"$exists": False}}, {MIXTRAL}),
        ({"tasks": "code"}, {CODER}),
        ({"tasks": "vision"}, {GPT}),
        ({"capabilities": "tools"}, {LLAMA, GPT}),
        ({"aliases": "fast"}, {LLAMA}),
        ({"size": "tiny"}, {QWEN}),
        ({"size": {"$lte": "small"}}, {LLAMA, QWEN}),
        ({"size": {"$gt": "medium"}}, {MIXTRAL}),
        ({"size": {"$gte": "tiny"}}, {LLAMA, CODER, QWEN, MIXTRAL}),
        ({"id": {"$contains": "QWEN"}}, {CODER, QWEN}),
        ({"custom.owner": "bob"}, {CODER}),
        ({"custom.owner": {"$exists": True}}, {CODER, QWEN}),
        ({"custom.langs": {"$contains": "rust"}}, {CODER}),
        ({"custom.owner": {"$contains": "LIC"}}, {QWEN}),
        ({"custom.score": {"$gt": 7}}, {CODER}),
        ({"custom.beta": True}, {CODER}),
        ({"refs.huggingface": {"$exists": True}}, {LLAMA, QWEN}),
        ({"pricing.input": {"$gte": 1}}, {GPT}),
        ({"created_at": {"$gt": "2000-01-01T00:00:00Z"}}, {LLAMA, CODER, QWEN, GPT, MIXTRAL}),
        ({"created_at": {"$lt": "2000-01-01"}}, set()),
        ({"$or": [{"backend": "openai"}, {"tags": "tiny"}]}, {GPT, QWEN}),
        ({"$not": {"backend": "ollama"}}, {QWEN, GPT}),
        ({"$and": [{"tags": "local"}, {"installed": False}]}, {CODER}),
        ({"purpose": {"$in": []}}, set()),
    ],
)
def test_query_selects(sample: Registry, query: dict, expected: set[str]) -> None:
    assert {m.id for m in sample.query(query)} == expected
    assert sample.count(query) == len(expected)


def test_groups_are_queryable(sample: Registry) -> None:
    sample.group("prod", "fast", "gpt-4o")
    assert set(sample.ids({"groups": "prod"})) == {LLAMA, GPT}
    assert set(sample.ids({"groups": {"$exists": False}})) == {CODER, QWEN, MIXTRAL}
    assert set(sample.ids(group="prod")) == {LLAMA, GPT}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("context_length>=100k", {LLAMA, GPT}),
        ("backend = ollama and tags ~ local", {LLAMA, CODER}),
        ("backend in [openai, huggingface]", {QWEN, GPT}),
        ("backend not in (ollama)", {QWEN, GPT}),
        ("file_size<4GB", {LLAMA}),
        ("parameters>7.5B", {CODER, MIXTRAL}),
        ("custom.owner?", {CODER, QWEN}),
        ("custom.owner='alice'", {QWEN}),
        ("custom.score>=7.5", {CODER}),
        ("custom.beta=true", {CODER}),
        ("installed=yes", {LLAMA, GPT}),
        ("tags!~local", {QWEN, GPT, MIXTRAL}),
        ("size<=small && purpose=speed", {LLAMA, QWEN}),
        ("quantization=q4_k_m", {LLAMA, CODER}),
        ("quantization=null", {GPT, MIXTRAL}),
    ],
)
def test_where_expressions(sample: Registry, text: str, expected: set[str]) -> None:
    assert set(sample.ids(text)) == expected


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"tags": {"$regex": "x"}}, "unknown operator '$regex'"),
        ({"$xor": []}, "unknown operator '$xor'"),
        ({"context_length": {"$gte": "big"}}, "is a number"),
        ({"installed": "yes"}, "true or false"),
        ({"tags": {"$gt": "a"}}, "does not apply to the list field"),
        ({"size": {"$lt": "huge"}}, "one of tiny, small"),
        ({"custom": "x"}, "holds several values"),
        ({"pricing.total": 1}, "pricing has input, output"),
        ({"custom.a b": 1}, "keys may hold"),
        ({"$or": []}, "non-empty list"),
        ({"backend": {"$in": "ollama"}}, "takes a list"),
        ({"tags": {"$exists": "yes"}}, "true or false"),
        ({"context_length": {"$contains": "1"}}, "needs a text or list field"),
        ({"backend": {"$eq": ["a"]}}, "compares with text"),
        (["not", "a", "dict"], "mapping of field to condition"),
    ],
)
def test_bad_queries_are_clear(query: object, words: str) -> None:
    with pytest.raises(InvalidQuery, match=words.replace("$", r"\$")):
        compile_query(query)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("context_length", "cannot read"),
        ("context_length>=", "no value"),
        ("context_length>=lots", "not a count"),
        ("colour=red", "unknown field"),
        ("installed=maybe", "true or false"),
    ],
)
def test_bad_where_is_clear(text: str, words: str) -> None:
    with pytest.raises(InvalidQuery, match=words):
        parse_where(text)


def test_values_are_bound_not_spliced(sample: Registry) -> None:
    """A hostile value is data, never SQL."""
    hostile = "x' OR 1=1 --"
    assert sample.ids({"backend": hostile}) == []
    assert sample.ids({"tags": hostile}) == []
    assert sample.ids({"custom.owner": {"$contains": hostile}}) == []
    sql, params = compile_query({"backend": hostile})
    assert hostile not in sql and hostile in params


def test_sorting_and_limits(sample: Registry) -> None:
    by_params = sample.ids(order_by="-parameters")
    assert by_params[:2] == [MIXTRAL, CODER] and by_params[-1] == GPT  # nulls last
    assert sample.ids(order_by=["size", "id"])[:2] == [QWEN, LLAMA]
    assert sample.ids(limit=2) == sorted([LLAMA, CODER, QWEN, GPT, MIXTRAL])[:2]
    with pytest.raises(InvalidQuery, match="list field"):
        sample.ids(order_by="tags")


def test_field_table_matches_the_model() -> None:
    """The query vocabulary and the record agree: every Model field is queryable, and no other."""
    from modelctl.record.model import Model

    assert set(FIELDS) - {"groups"} == set(Model.model_fields)
    list_fields = {n for n, f in Model.model_fields.items() if "list[" in str(f.annotation)}
    assert {n for n, s in FIELDS.items() if s.kind == "list"} - {"groups"} == list_fields


def test_indexed_columns_are_the_stores() -> None:
    from modelctl.store.schema import INDEXED_COLUMNS

    assert {s.column for s in FIELDS.values() if s.column} == {"id"} | {
        c for c, _, _ in INDEXED_COLUMNS
    }
