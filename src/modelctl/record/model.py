"""The `Model` record: one description of a model, whatever backend holds or serves it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from modelctl.record import naming, units
from modelctl.record.errors import InvalidModel
from modelctl.record.kinds import Capability, Purpose, SizeClass, Status, Task

__all__ = [
    "Capability",
    "Model",
    "Pricing",
    "Purpose",
    "SizeClass",
    "Status",
    "Task",
    "size_class_for",
]


# Options a request (and a model's defaults) may set, as the OpenAI API names them.
GENERATION_OPTIONS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "repeat_penalty",
     "presence_penalty", "frequency_penalty", "min_p"}
)  # fmt: skip
# Each option's kind and bounds: what a request or a model's defaults may say (max_tokens takes
# Ollama's -1, no limit, and -2, fill the context).
_OPTION_RANGES: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0, 100), "top_p": (float, 0, 1), "min_p": (float, 0, 1),
    "top_k": (int, 0, 1_000_000), "max_tokens": (int, -2, 10_000_000),
    "seed": (int, -(2**63), 2**64 - 1), "repeat_penalty": (float, 0, 100),
    "presence_penalty": (float, -100, 100), "frequency_penalty": (float, -100, 100),
}  # fmt: skip


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Generation options checked and normalized (a whole float is a number, `stop` a list of
    strings); ValueError names the first that is wrong. None means "not set" and is dropped."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in GENERATION_OPTIONS:
            known = ", ".join(sorted(GENERATION_OPTIONS))
            raise ValueError(f"unknown generation option {name!r} (known: {known})")
        if name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise ValueError("stop: must be a string or a list of strings")
            out[name] = stops
            continue
        kind, low, high = _OPTION_RANGES[name]
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_ok or (kind is int and isinstance(value, float) and not value.is_integer()):
            shown = repr(value)[:40]
            raise ValueError(
                f"{name}: must be {'a whole number' if kind is int else 'a number'}, not {shown}"
            )
        if not low <= value <= high:
            raise ValueError(f"{name}: must be between {low:g} and {high:g}, not {value!r}")
        out[name] = kind(value)
    return out


def size_class_for(parameters: int) -> SizeClass:
    """The size class of a parameter count; bounds sit at half a billion past 7B and 30B."""
    if parameters < 1_000_000_000:
        return SizeClass.TINY
    if parameters < 7_500_000_000:
        return SizeClass.SMALL
    if parameters < 30_500_000_000:
        return SizeClass.MEDIUM
    return SizeClass.LARGE


_BACKEND = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")
# what check_id takes, for the JSON schema (where \s, as JavaScript reads it, lacks \x85)
_ID_PATTERN = r"^[^\s\x00-\x1f\x7f\x85]{1,256}$"
_QUANTIZATION = r"[A-Za-z0-9_.-]{1,32}"
_TAG = re.compile(r"^[^\s,\x00-\x1f\x7f\x85]{1,128}$")


def check_id(value: str, what: str = "id") -> str:
    """An id or alias: 1-256 characters, no whitespace or control characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    if not value or len(value) > 256:
        raise ValueError(f"{what} must be 1 to 256 characters long")
    if _BAD_ID.search(value):
        raise ValueError(f"{what} {value!r} must not contain spaces or control characters")
    return value


def check_tag(value: str) -> str:
    if not isinstance(value, str) or not _TAG.match(value):
        raise ValueError(f"tag {value!r} must be 1-128 characters without spaces or commas")
    return value


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


class Pricing(BaseModel):
    """Price per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # at most a million a million tokens: a cost stays a finite number (an infinite one broke
    # every answer that carried it, JSON has no infinity)
    input: float = Field(default=0.0, ge=0, le=1e6, description="per million input tokens")
    output: float = Field(default=0.0, ge=0, le=1e6, description="per million output tokens")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1_000_000


class Model(BaseModel):
    """One model: who serves it, what it is, what it needs, and what the user said about it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        description="registry key: unique, no spaces", json_schema_extra={"pattern": _ID_PATTERN}
    )
    name: str | None = Field(default=None, description="display name; the id when unset")
    backend: str = Field(
        description="the backend that holds or serves it: ollama, openai, …",
        json_schema_extra={"pattern": _BACKEND.pattern},
    )
    refs: dict[str, str] = Field(
        default_factory=dict,
        description="the id each backend knows it by",
        json_schema_extra={
            "propertyNames": {"pattern": _BACKEND.pattern},
            "additionalProperties": {"type": "string", "pattern": r"\S"},
        },
    )
    tasks: list[Task] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=list)
    family: str | None = Field(
        default=None, max_length=100, description="its architecture: llama, qwen2, bert, …"
    )
    parameters: int | None = Field(default=None, gt=0, description="parameter count")
    size: SizeClass | None = Field(default=None, description="derived from parameters if unset")
    quantization: str | None = Field(
        default=None,
        description="Q4_K_M, Q8_0, F16, INT4, …",
        json_schema_extra={"pattern": f"^{_QUANTIZATION}$"},
    )
    context_length: int | None = Field(default=None, gt=0, description="tokens")
    max_output_tokens: int | None = Field(default=None, gt=0)
    file_size: int | None = Field(default=None, ge=0, description="bytes on disk")
    download_size: int | None = Field(default=None, ge=0, description="bytes to download")
    location: str | None = Field(default=None, description="path or URL")
    digest: str | None = Field(
        default=None, pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of the weights file"
    )
    installed: bool = False
    status: Status = Status.AVAILABLE
    min_memory: int | None = Field(default=None, ge=0, description="bytes needed to run")
    purpose: Purpose | None = None
    pricing: Pricing | None = None
    license: str | None = None
    description: str | None = None
    tags: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "pattern": _TAG.pattern}},
    )
    aliases: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "pattern": _ID_PATTERN}},
    )
    custom: dict[str, JsonValue] = Field(default_factory=dict, description="user metadata")
    defaults: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="generation options applied to every request",
        json_schema_extra={"propertyNames": {"enum": sorted(GENERATION_OPTIONS)}},
    )
    system: str | None = Field(
        default=None,
        max_length=100_000,
        description="system prompt given to every chat that brings none of its own",
    )
    base: str | None = Field(
        default=None,
        description="the model this one derives from (`ollama create` FROM it, `ollama cp`): "
        "the same weights under its own name, defaults and system prompt; deleting it "
        "removes only this record",
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_used: datetime | None = None

    # ------------------------------------------------------------------ field validation

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if not isinstance(value, str) or not _BACKEND.match(value):
            raise ValueError(f"backend {value!r} must be lowercase letters, digits, - or _")
        return value

    @field_validator("refs")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        for backend, ref in value.items():
            cls._backend(backend)
            if not ref.strip():
                raise ValueError(f"the reference for backend {backend!r} is empty")
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple | set):
            value = ["vision" if v == "multimodal" else v for v in value]
        return value

    @field_validator("capabilities", "tags", "aliases", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("tasks", "capabilities")
    @classmethod
    def _dedupe(cls, value: list[Any]) -> list[Any]:
        return _unique(value)

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        return units.parse_parameters(value) if isinstance(value, str) else value

    @field_validator("context_length", "max_output_tokens", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return units.parse_count(value) if isinstance(value, str) else value

    @field_validator("file_size", "download_size", "min_memory", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return units.parse_bytes(value) if isinstance(value, str) else value

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(_QUANTIZATION, value.strip()):
            raise ValueError(f"quantization {value!r} is not a quantization name (e.g. Q4_K_M)")
        return naming.normalize_quantization(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return sorted({check_tag(t.strip()) for t in value})

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return sorted({check_id(a, "alias") for a in value})

    @field_validator("custom")
    @classmethod
    def _custom(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or "." in key or key.startswith("$") or len(key) > 128:
                raise ValueError(
                    f"custom key {key!r} must be 1-128 characters, without '.' or a leading '$'"
                )
        return value

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_options(value)

    @field_validator("created_at", "updated_at", "last_used")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _derived(self) -> Model:
        if self.size is None and self.parameters is not None:
            object.__setattr__(self, "size", size_class_for(self.parameters))  # frozen record
        if self.id in self.aliases:
            raise ValueError(f"alias {self.id!r} is the model's own id")
        return self

    # ------------------------------------------------------------------ conveniences

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def file(self) -> str | None:
        """Where the model's own files are on this disk: its location, or a reference that is a
        GGUF path (what a GGUF backend knows the model by)."""
        if self.location:
            return self.location
        return next((r for r in self.refs.values() if r.lower().endswith(".gguf")), None)

    def ref_for(self, backend: str | None = None) -> str:
        """The name `backend` (default: the model's own) knows this model by."""
        backend = backend or self.backend
        return self.refs.get(backend, self.id)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data: what the store keeps and exports write."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any, *, context: str | None = None) -> Model:
        """Validate data into a Model; a bad value raises InvalidModel naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_model(exc, data, context=context) from None

    def updated(self, **changes: Any) -> Model:
        """A validated copy with `changes` applied (a size derived from parameters follows them)."""
        data = self.to_dict() | changes
        derived = self.parameters is not None and self.size == size_class_for(self.parameters)
        if "parameters" in changes and "size" not in changes and derived:
            data["size"] = None
        return Model.from_dict(data, context=f"model {self.id!r}")

    @classmethod
    def now(cls) -> datetime:
        return datetime.now(UTC)


def invalid_model(exc: ValidationError, data: Any, *, context: str | None = None) -> InvalidModel:
    """Turn pydantic's error list into one line that names the model and the field."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    if context is None:
        model_id = data.get("id") if isinstance(data, dict) else None
        context = f"model {model_id!r}" if isinstance(model_id, str) else "model"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    where = f", field {field!r}" if field else ""
    return InvalidModel(f"invalid {context}{where}: {message}{tail}", field=field)
