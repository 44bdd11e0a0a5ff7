"""The registry's query language, compiled to SQL so that the database does the filtering.

A query is a dict of field → condition, all of which must hold:

    {"context_length": {"$gte": 8000}, "tags": {"$contains": "prod"}, "backend": "ollama"}

Operators: $eq $ne $gt $gte $lt $lte $in $nin $contains $exists, and $and $or $not to combine.
On text, $contains finds a substring in any case (`search` builds one over id, name, family and
description; `fits` one for what fits a memory budget).
On list fields (tags, tasks, capabilities, aliases, groups) a plain value or $contains means "has
this element", $in "has any of", $nin "has none of", $exists "is not empty". Dotted paths reach
into maps and sub-records: `custom.owner`, `refs.ollama`, `pricing.input`.

The command line writes the same thing as `--where` expressions (see `parse_where`):

    context_length>=8k   tags~prod   backend in [ollama, openai]   custom.owner?   size<=small

This module imports nothing heavy: `modelctl list` runs it without loading the Model class.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from modelctl.record import units
from modelctl.record.errors import InvalidQuery

__all__ = [
    "FIELDS",
    "SEARCHED",
    "FieldSpec",
    "compile_order",
    "compile_query",
    "criteria",
    "fits",
    "parse_where",
    "search",
]

SIZE_ORDER = ("tiny", "small", "medium", "large")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How a Model field is stored and compared.

    kind: text | int | float | bool | time | list | map | record.
    column: an indexed column of the `models` table; otherwise the JSON path in `data`.
    facet: for lists kept in the facets table (indexed membership).
    parse: turns a value from a --where expression into the stored form (`8k` → 8192).
    """

    kind: str
    column: str | None = None
    facet: str | None = None
    parse: Callable[[str], Any] | None = None
    order: tuple[str, ...] | None = None  # enums whose values are ranked (size)


# Kept in step with model.Model by a test; the indexed columns are those the store generates.
FIELDS: dict[str, FieldSpec] = {
    "id": FieldSpec("text", column="id"),
    "name": FieldSpec("text"),
    "backend": FieldSpec("text", column="backend"),
    "refs": FieldSpec("map"),
    "tasks": FieldSpec("list", facet="task"),
    "capabilities": FieldSpec("list", facet="capability"),
    "family": FieldSpec("text"),
    "parameters": FieldSpec("int", column="parameters", parse=units.parse_parameters),
    "size": FieldSpec("text", column="size", order=SIZE_ORDER),
    "quantization": FieldSpec("text", column="quantization", parse=str.upper),
    "context_length": FieldSpec("int", column="context_length", parse=units.parse_count),
    "max_output_tokens": FieldSpec("int", parse=units.parse_count),
    "file_size": FieldSpec("int", column="file_size", parse=units.parse_bytes),
    "download_size": FieldSpec("int", parse=units.parse_bytes),
    "location": FieldSpec("text"),
    "digest": FieldSpec("text"),
    "installed": FieldSpec("bool", column="installed"),
    "status": FieldSpec("text", column="status"),
    "min_memory": FieldSpec("int", column="min_memory", parse=units.parse_bytes),
    "purpose": FieldSpec("text", column="purpose"),
    "pricing": FieldSpec("record"),
    "license": FieldSpec("text"),
    "description": FieldSpec("text"),
    "tags": FieldSpec("list", facet="tag"),
    "aliases": FieldSpec("list", facet="alias"),
    "custom": FieldSpec("map"),
    "defaults": FieldSpec("map"),
    "system": FieldSpec("text"),
    "base": FieldSpec("text"),
    "created_at": FieldSpec("time"),
    "updated_at": FieldSpec("time"),
    "last_used": FieldSpec("time"),
    # Not a Model field: membership in the registry's named groups.
    "groups": FieldSpec("list"),
}
# Sub-fields with a known type; any other dotted path is compared as stored JSON.
_SUBFIELDS = {
    "pricing.input": FieldSpec("float"),
    "pricing.output": FieldSpec("float"),
    "pricing.currency": FieldSpec("text"),
}
_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$exists")
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _field(name: str) -> tuple[FieldSpec, str]:
    """The spec of a field or dotted path, and the SQL expression that reads it."""
    if not isinstance(name, str) or not name:
        raise InvalidQuery(f"field name {name!r} must be non-empty text")
    if name in FIELDS:
        spec = FIELDS[name]
        if spec.kind in ("map", "record"):
            raise InvalidQuery(
                f"field {name!r} holds several values: query one of them, e.g. {name}.KEY"
            )
        return spec, spec.column or f"data ->> '$.{name}'"
    head, _, rest = name.partition(".")
    if head in FIELDS and FIELDS[head].kind in ("map", "record") and rest:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", rest):
            raise InvalidQuery(f"path {name!r}: keys may hold letters, digits, '-' and '_'")
        if head == "pricing" and name not in _SUBFIELDS:
            raise InvalidQuery(f"unknown field {name!r} (pricing has input, output, currency)")
        spec = _SUBFIELDS.get(name, FieldSpec("json"))
        path = "$." + ".".join(f'"{key}"' for key in name.split("."))
        return spec, f"data ->> '{path}'"
    known = ", ".join(sorted(FIELDS))
    raise InvalidQuery(f"unknown field {name!r}", hint=f"fields: {known}; or custom.KEY")


def _value(spec: FieldSpec, name: str, value: Any) -> Any:
    """Check a value against the field's kind; a bool becomes 1/0, as SQLite stores it."""
    if value is None:
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise InvalidQuery(f"field {name!r} is true or false, not {value!r}")
        return int(value)
    if spec.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidQuery(f"field {name!r} is a number, not {value!r}")
        return value
    if spec.kind in ("text", "list", "time"):
        if not isinstance(value, str):
            raise InvalidQuery(f"field {name!r} compares with text, not {value!r}")
        return value
    if isinstance(value, bool):  # json: ->> gives SQLite's 1/0 for true/false
        return int(value)
    if isinstance(value, list | dict):
        raise InvalidQuery(f"field {name!r}: compare with a single value, not {value!r}")
    return value


class _Compiler:
    """The query as SQLite's SQL (the PostgreSQL dialect below overrides what differs)."""

    TRUE, FALSE = "1", "0"

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.negated = 0  # inside this many $not

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def query(self, query: Any) -> str:
        if not isinstance(query, dict):
            raise InvalidQuery(f"a query is a mapping of field to condition, not {query!r}")
        parts = []
        for key, condition in query.items():
            if key in ("$and", "$or"):
                if not isinstance(condition, list) or not condition:
                    raise InvalidQuery(f"{key} takes a non-empty list of queries")
                joiner = " AND " if key == "$and" else " OR "
                first = self.holds_text(_searched(condition)) if key == "$or" else ""
                inner = "(" + joiner.join(self.query(q) for q in condition) + ")"
                parts.append(f"({first} AND {inner})" if first else inner)
            elif key == "$not":
                self.negated += 1
                parts.append(f"NOT ({self.query(condition)})")
                self.negated -= 1
            elif isinstance(key, str) and key.startswith("$"):
                raise InvalidQuery(f"unknown operator {key!r} at the top of a query")
            else:
                parts.append(self.condition(key, condition))
        return " AND ".join(parts) if parts else self.TRUE

    def holds_text(self, text: str | None) -> str:
        """A cheap first check for an `$or` of `$contains` of the same text (a search): the
        record's stored JSON must hold it (ASCII case ignored, as `lower` does), before any
        field is read out of it (a search of 100,000 models that finds a few: 0.3 s, not 1.5).

        Nothing for text that JSON stores escaped, and nothing under `$not`: where it fails,
        the `$or` is false where it may have been NULL, which only a WHERE clause (that
        leaves out both) takes for the same.
        """
        if self.negated or text is None or len(text) > 1000 or not _VERBATIM.fullmatch(text):
            return ""  # (and SQLite refuses a LIKE pattern over 50,000 bytes)
        pattern = "%" + re.sub(r"([%_])", r"\\\1", text) + "%"
        return f"data LIKE {self.bind(pattern)} ESCAPE '\\'"

    def field(self, name: str) -> tuple[FieldSpec, str]:
        return _field(name)

    def condition(self, name: str, condition: Any) -> str:
        spec, expr = self.field(name)
        if not (isinstance(condition, dict) and any(str(k).startswith("$") for k in condition)):
            condition = {"$eq": condition}
        parts = []
        for op, operand in condition.items():
            if op not in _OPERATORS:
                raise InvalidQuery(
                    f"unknown operator {op!r} on {name!r}", hint=" ".join(_OPERATORS)
                )
            if spec.kind == "list":
                parts.append(self.list_condition(name, spec, op, operand))
            else:
                parts.append(self.scalar_condition(name, spec, expr, op, operand))
        return " AND ".join(parts)

    def holds(self, expr: str, text: str) -> str:
        """SQL for "`expr` holds `text`, in any case". SQLite's `lower` folds ASCII only: text
        with other letters is compared casefolded, by the function the store registers."""
        if text.isascii():
            return f"instr(lower({expr}), lower({self.bind(text)})) > 0"
        return f"instr(casefold({expr}), {self.bind(text.casefold())}) > 0"

    def members(self, name: str, spec: FieldSpec, values: list[Any]) -> str:
        """SQL for "the model has one of these elements" (indexed)."""
        values = [_value(spec, name, v) for v in values]
        if name == "groups":
            marks = ", ".join(self.bind(v) for v in values)
            return f"id IN (SELECT model_id FROM group_members WHERE group_name IN ({marks}))"
        facet = self.bind(spec.facet)  # bound in the order the placeholders appear
        marks = ", ".join(self.bind(v) for v in values)
        return f"id IN (SELECT model_id FROM facets WHERE facet = {facet} AND value IN ({marks}))"

    def list_condition(self, name: str, spec: FieldSpec, op: str, operand: Any) -> str:
        if op in ("$eq", "$contains"):
            return self.members(name, spec, [operand])
        if op == "$ne":
            return f"NOT ({self.members(name, spec, [operand])})"
        if op in ("$in", "$nin"):
            values = _as_list(name, op, operand)
            if not values:
                return self.FALSE if op == "$in" else self.TRUE
            sql = self.members(name, spec, values)
            return sql if op == "$in" else f"NOT ({sql})"
        if op == "$exists":
            if name == "groups":
                sql = "id IN (SELECT model_id FROM group_members)"
            else:
                sql = f"id IN (SELECT model_id FROM facets WHERE facet = {self.bind(spec.facet)})"
            return sql if _truth(name, operand) else f"NOT ({sql})"
        raise InvalidQuery(f"{op} does not apply to the list field {name!r}: use $contains or $in")

    def scalar_condition(self, name: str, spec: FieldSpec, expr: str, op: str, operand: Any) -> str:
        if op == "$exists":
            return f"{expr} IS {'NOT ' if _truth(name, operand) else ''}NULL"
        if op in ("$in", "$nin"):
            values = [_value(spec, name, v) for v in _as_list(name, op, operand)]
            if not values:
                return self.FALSE if op == "$in" else self.TRUE
            marks = ", ".join(self.bind(v) for v in values)
            if op == "$in":
                return f"{expr} IN ({marks})"
            return f"({expr} IS NULL OR {expr} NOT IN ({marks}))"
        if op == "$contains":
            if spec.kind not in ("text", "json"):
                raise InvalidQuery(f"$contains needs a text or list field; {name!r} is {spec.kind}")
            if not isinstance(operand, str):
                raise InvalidQuery(f"$contains on {name!r} takes text, not {operand!r}")
            if spec.kind == "json":
                # a custom value may be a list (has the element) or text (has the substring)
                path = expr.split("->>", 1)[1].strip()
                element = self.bind(operand)  # bound in the order the placeholders appear
                holds = self.holds(expr, operand)
                return (
                    f"(CASE json_type(data, {path}) WHEN 'array' THEN EXISTS "
                    f"(SELECT 1 FROM json_each(data, {path}) WHERE value = {element}) "
                    f"WHEN 'text' THEN {holds} ELSE 0 END)"
                )
            return self.holds(expr, operand)
        # comparisons
        if spec.order is not None and op not in ("$eq", "$ne"):
            return self.ranked(name, spec, expr, op, operand)
        value = _value(spec, name, operand)
        if value is None:
            if op in ("$eq", "$ne"):
                return f"{expr} IS {'NOT ' if op == '$ne' else ''}NULL"
            raise InvalidQuery(f"{op} on {name!r} needs a value, not null")
        if spec.kind == "time":
            return f"julianday({expr}) {_COMPARE[op]} julianday({self.bind(value)})"
        if op == "$ne":  # a missing value is "not equal" too
            return f"({expr} IS NULL OR {expr} != {self.bind(value)})"
        return f"{expr} {_COMPARE[op]} {self.bind(value)}"

    def ranked(self, name: str, spec: FieldSpec, expr: str, op: str, operand: Any) -> str:
        assert spec.order is not None
        if operand not in spec.order:
            raise InvalidQuery(f"{name!r} is one of {', '.join(spec.order)}, not {operand!r}")
        rank = spec.order.index(operand)
        keep = {
            "$gt": lambda r: r > rank,
            "$gte": lambda r: r >= rank,
            "$lt": lambda r: r < rank,
            "$lte": lambda r: r <= rank,
        }[op]
        values = [v for r, v in enumerate(spec.order) if keep(r)]
        if not values:
            return self.FALSE
        return f"{expr} IN ({', '.join(self.bind(v) for v in values)})"


# Text a record's JSON holds as it is (printable ASCII but the quote and backslash JSON
# escapes): a match in a field is a match in the record's stored text.
_VERBATIM = re.compile(r"[ !#-\[\]-~]+")


def _searched(branches: list[Any]) -> str | None:
    """The text every branch looks for, when each is `{field: {"$contains": text}}` on a field
    stored in the record (not `groups`)."""
    texts = set()
    for branch in branches:
        if not isinstance(branch, dict) or len(branch) != 1:
            return None
        ((name, condition),) = branch.items()
        if name == "groups" or not isinstance(condition, dict) or len(condition) != 1:
            return None
        text = condition.get("$contains")
        if not isinstance(text, str):
            return None
        texts.add(text)
    return texts.pop() if len(texts) == 1 else None


def _as_list(name: str, op: str, operand: Any) -> list[Any]:
    if not isinstance(operand, list | tuple):
        raise InvalidQuery(f"{op} on {name!r} takes a list, not {operand!r}")
    return list(operand)


def _truth(name: str, operand: Any) -> bool:
    if not isinstance(operand, bool):
        raise InvalidQuery(f"$exists on {name!r} takes true or false, not {operand!r}")
    return operand


class _PostgresCompiler(_Compiler):
    """The query as PostgreSQL's SQL: fields read from the record's JSONB (`doc`), typed as
    SQLite's `->>` types them, so that both engines give the same answers."""

    TRUE, FALSE = "TRUE", "FALSE"

    def field(self, name: str) -> tuple[FieldSpec, str]:
        spec, _ = _field(name)  # checks the name
        if spec.column:
            from modelctl.store.postgres import COLUMNS

            return spec, COLUMNS.get(spec.column, spec.column)  # (`id` is a column there too)
        path = _pg_path(name)
        if spec.kind in ("int", "float"):
            return spec, f"(doc #>> {path})::numeric"
        if spec.kind == "bool":
            return spec, f"(CASE doc #>> {path} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
        return spec, f"(doc #>> {path})"

    def holds_text(self, text: str | None) -> str:
        sql = super().holds_text(text)
        return sql.replace("data LIKE", "data ILIKE")  # SQLite's LIKE ignores ASCII case

    def holds(self, expr: str, text: str) -> str:
        """Any case: ASCII by `lower`; other letters through ICU's root locale (a database
        in the C locale folds only ASCII), which PostgreSQL's usual builds include."""
        if text.isascii():
            return f"strpos(lower({expr}), lower({self.bind(text)})) > 0"
        icu = 'COLLATE "und-x-icu"'
        return f"strpos(lower({expr} {icu}), lower({self.bind(text)} {icu})) > 0"

    def scalar_condition(self, name: str, spec: FieldSpec, expr: str, op: str, operand: Any) -> str:
        if spec.kind == "time" and op in _COMPARE and operand is not None:
            value = _value(spec, name, operand)
            try:  # checked here: PostgreSQL refuses what it cannot read (SQLite finds nothing)
                from datetime import datetime

                datetime.fromisoformat(value)
            except ValueError:
                raise InvalidQuery(
                    f"{name!r} compares with a time such as 2026-05-01T12:00:00Z, not {value!r}"
                ) from None
            return f"({expr})::timestamptz {_COMPARE[op]} ({self.bind(value)})::timestamptz"
        if spec.kind != "json" or op == "$exists":
            return super().scalar_condition(name, spec, expr, op, operand)
        path = _pg_path(name)
        if op == "$contains":
            if not isinstance(operand, str):
                raise InvalidQuery(f"$contains on {name!r} takes text, not {operand!r}")
            element = self.bind(operand)
            holds = self.holds(f"(doc #>> {path})", operand)
            return (
                f"(CASE jsonb_typeof(doc #> {path}) WHEN 'array' THEN EXISTS (SELECT 1 FROM "
                f"jsonb_array_elements(doc #> {path}) e WHERE e = to_jsonb({element}::text)) "
                f"WHEN 'string' THEN {holds} ELSE FALSE END)"
            )
        if op in ("$in", "$nin"):
            values = [_value(spec, name, v) for v in _as_list(name, op, operand)]
            if not values:
                return self.FALSE if op == "$in" else self.TRUE
            found = " OR ".join(f"{self.typed(path, v)} = {self.bind(v)}" for v in values)
            found = f"COALESCE(({found}), FALSE)"
            return found if op == "$in" else f"NOT {found}"
        value = _value(spec, name, operand)
        if value is None:
            if op in ("$eq", "$ne"):
                return f"{expr} IS {'NOT ' if op == '$ne' else ''}NULL"
            raise InvalidQuery(f"{op} on {name!r} needs a value, not null")
        compared = f"{self.typed(path, value)} {_COMPARE[op if op != '$ne' else '$eq']} "
        compared += self.bind(value)
        return f"NOT COALESCE({compared}, FALSE)" if op == "$ne" else compared

    @staticmethod
    def typed(path: str, value: Any) -> str:
        """The JSON value at `path` as SQLite's `->>` gives it, for comparing with `value`:
        numbers (true and false as 1 and 0) with a number, text with text; NULL otherwise."""
        if isinstance(value, int | float):
            return (
                f"(CASE jsonb_typeof(doc #> {path}) WHEN 'number' THEN (doc #>> {path})::numeric "
                f"WHEN 'boolean' THEN (CASE doc #>> {path} WHEN 'true' THEN 1 ELSE 0 END) END)"
            )
        return f"(CASE jsonb_typeof(doc #> {path}) WHEN 'string' THEN doc #>> {path} END)"


def _pg_path(name: str) -> str:
    """A field's path in the record's JSONB: `custom.owner` → `'{custom,owner}'` (the keys are
    letters, digits, `-` and `_`: checked by `_field`)."""
    return "'{" + ",".join(name.split(".")) + "}'"


DIALECTS = {"sqlite": _Compiler, "postgresql": _PostgresCompiler}


def compile_query(query: dict[str, Any] | None, dialect: str = "sqlite") -> tuple[str, list[Any]]:
    """SQL for a WHERE clause over the `models` table, and its parameters."""
    compiler = DIALECTS[dialect]()
    sql = compiler.query(query or {})
    return sql, compiler.params


def compile_order(order_by: str | Iterable[str] | None, dialect: str = "sqlite") -> str:
    """ORDER BY for field names, `-field` descending; always ends with id for a stable order."""
    names = [order_by] if isinstance(order_by, str) else list(order_by or [])
    compiler = DIALECTS[dialect]()
    # PostgreSQL orders text by the database's locale: by bytes (as SQLite does) instead
    collate = ' COLLATE "C"' if dialect == "postgresql" else ""
    parts = []
    for name in names:
        descending = name.startswith("-")
        spec, expr = compiler.field(name.removeprefix("-"))
        if spec.kind in ("text", "json", "time") and spec.order is None:
            expr += collate
        if spec.kind == "list":
            raise InvalidQuery(f"cannot sort by the list field {name.removeprefix('-')!r}")
        if spec.order is not None:
            cases = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(spec.order))
            expr = f"CASE {expr} {cases} END"
        parts.append(f"{expr} {'DESC' if descending else 'ASC'} NULLS LAST")
    parts.append(f"id{collate} ASC")
    return ", ".join(parts)


# ---------------------------------------------------------------- --where expressions

_WHERE = re.compile(
    r"""^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\-]*)\s*
    (?:(?P<op>>=|<=|!=|==|=|>|<|!~|~|\s+not\s+in\s+|\s+in\s+)\s*(?P<value>.*?)|(?P<exists>\?))\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_WHERE_OPS = {
    "=": "$eq",
    "==": "$eq",
    "!=": "$ne",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
    "~": "$contains",
    "!~": "$ncontains",
    "in": "$in",
    "not in": "$nin",
}
_AND = re.compile(r"\s+and\s+|\s*&&\s*", re.IGNORECASE)


def _literal(text: str, spec: FieldSpec, name: str) -> Any:
    """A value as written in a --where expression, read in the field's terms."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("null", "none"):
        return None
    if spec.kind == "bool" or (spec.kind == "json" and lowered in ("true", "false")):
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise InvalidQuery(f"field {name!r} is true or false, not {text!r}")
    if spec.parse is not None:
        try:
            return spec.parse(text)
        except ValueError as exc:
            raise InvalidQuery(f"field {name!r}: {exc}") from None
    if spec.kind in ("int", "float", "json"):
        try:
            number = float(text)
        except ValueError:
            if spec.kind == "json":
                return text
            raise InvalidQuery(f"field {name!r} is a number, not {text!r}") from None
        return int(number) if number.is_integer() and "." not in text else number
    return text


def parse_where(text: str) -> dict[str, Any]:
    """Read a --where expression into a query: clauses joined by `and`.

    >>> parse_where("context_length>=8k and tags~prod")
    {'$and': [{'context_length': {'$gte': 8192}}, {'tags': {'$contains': 'prod'}}]}
    """
    if not text or not text.strip():
        raise InvalidQuery("empty --where expression", hint="e.g. --where 'context_length>=8k'")
    clauses = []
    for clause in _AND.split(text.strip()):
        match = _WHERE.match(clause)
        if not match:
            raise InvalidQuery(
                f"cannot read {clause!r}",
                hint="write FIELD OP VALUE with OP one of = != > >= < <= ~ !~ in, or FIELD?",
            )
        name = match.group("field")
        spec, _ = _field(name)
        if match.group("exists"):
            clauses.append({name: {"$exists": True}})
            continue
        op = _WHERE_OPS[" ".join(match.group("op").split()).lower()]
        raw = match.group("value")
        if not raw.strip():
            raise InvalidQuery(f"{clause!r} has no value after the operator")
        if op in ("$in", "$nin"):
            inner = raw.strip().removeprefix("[").removesuffix("]").removeprefix("(")
            items = [i for i in inner.removesuffix(")").split(",") if i.strip()]
            value: Any = [_literal(i, spec, name) for i in items]
        elif op in ("$contains", "$ncontains"):
            value = _literal(raw, FieldSpec("text"), name)
        else:
            value = _literal(raw, spec, name)
        if op == "$ncontains":
            clauses.append({"$not": {name: {"$contains": value}}})
        else:
            clauses.append({name: {op: value}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


SEARCHED = ("id", "name", "family", "description")


def search(text: str) -> dict[str, Any]:
    """A query for models whose id, name, family or description holds `text` (case ignored).

    >>> search("qwen")["$or"][1]
    {'name': {'$contains': 'qwen'}}
    """
    return {"$or": [{name: {"$contains": text}} for name in SEARCHED]}


def fits(budget: int | None, *, fit: bool = True) -> dict[str, Any]:
    """A query for models that fit in `budget` bytes (`fit=False`: those that do not).

    A model's size is its `min_memory`, else its `file_size`; a model with neither (served
    elsewhere) fits, and with no budget every model does. Each branch names its NULLs: a
    comparison with NULL is neither true nor false.
    """
    if budget is None:
        return {} if fit else {"id": {"$in": []}}
    if fit:
        return {"$or": [
            {"min_memory": {"$lte": budget}},
            {"$and": [{"min_memory": None}, {"file_size": {"$lte": budget}}]},
            {"$and": [{"min_memory": None}, {"file_size": None}]},
        ]}  # fmt: skip
    return {"$or": [
        {"min_memory": {"$gt": budget}},
        {"$and": [{"min_memory": None}, {"file_size": {"$gt": budget}}]},
    ]}  # fmt: skip


def criteria(local_backends: Iterable[str] = (), **given: Any) -> dict[str, Any]:
    """A query from the common filters (`backend`, `task`, `size`, `tags`, `group`, …).

    A filter left at None is not applied; `tags` must all be present; a list for `backend`,
    `size`, `purpose`, `status` or `quantization` means any of them. `local` keeps the models of
    `local_backends` (True) or the others (False): the backends say which are theirs.
    """
    plural = {"task": "tasks", "capability": "capabilities", "group": "groups", "alias": "aliases"}
    clauses: list[dict[str, Any]] = []
    for key, value in given.items():
        if value is None or value == [] or value == ():
            continue
        if key == "tags":
            tags = [value] if isinstance(value, str) else list(value)
            clauses.extend({"tags": tag} for tag in tags)
        elif key in plural:
            clauses.append({plural[key]: {"$in": list(value)} if _many(value) else value})
        elif key == "local":
            clauses.append({"backend": {"$in" if value else "$nin": sorted(local_backends)}})
        elif key in FIELDS:
            clauses.append({key: {"$in": list(value)} if _many(value) else value})
        else:
            raise InvalidQuery(f"unknown filter {key!r}", hint="use query() for other fields")
    return clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else {}


def _many(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset)
