"""Read a user's model reference, whatever its form, and the facts a name carries.

A reference has a form that its spelling shows: a file `path` (`./m.gguf`, `~/m.gguf`), a
`repo` (`Org/Name`), a `tag` (`name:tag`, `user/name:tag`), a `provider` model
(`openai/gpt-4o`), or a bare `name`. Which backend a prefix (`hf:`), a provider or a form means
is not this module's to say: each backend declares it, and `modelctl.backends.schemes()` gathers
the declarations into the `Schemes` that `parse_ref` reads.

>>> schemes = Schemes(prefixes={"ollama": "ollama", "hf": "huggingface"},
...                   providers={"openai": "openai"}, forms={"repo": "huggingface"})
>>> parse_ref("ollama:llama3.2:3b", schemes)
ModelRef(text='ollama:llama3.2:3b', backend='ollama', name='llama3.2:3b', explicit=True, form='tag')
>>> parse_ref("hf:Qwen/Qwen2.5-0.5B-Instruct", schemes).backend
'huggingface'
>>> parse_ref("openai/gpt-4o", schemes).name
'gpt-4o'
>>> parse_ref("Org/Repo").form, parse_ref("Org/Repo").backend
('repo', None)
>>> parse_parameters_from_name("mixtral:8x7b"), parse_quantization("llama3.1:8b-instruct-q4_K_M")
(56000000000, 'Q4_K_M')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

from modelctl.record.errors import InvalidReference

__all__ = [
    "ModelRef",
    "Schemes",
    "default_id",
    "normalize_quantization",
    "parse_parameters_from_name",
    "parse_quantization",
    "parse_ref",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Schemes:
    """What the registered backends declare about references, by backend (instance) name:
    the prefixes a user may write (`hf` → huggingface), the providers written `provider/model`
    (`openai` → openai), the form each backend takes when none is written (`path` → the GGUF
    backend), and which backends run their models on this machine."""

    prefixes: Mapping[str, str] = field(default_factory=dict)
    providers: Mapping[str, str] = field(default_factory=dict)
    forms: Mapping[str, str] = field(default_factory=dict)
    local: frozenset[str] = frozenset()


NO_SCHEMES = Schemes()


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference: which backend it names (None: any) and the name that backend uses."""

    text: str
    backend: str | None
    name: str
    explicit: bool = False  # the backend was written out (`ollama:…`), not guessed
    form: str = "name"  # path | repo | tag | provider | name

    @property
    def is_path(self) -> bool:
        return self.form == "path"


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(".gguf") or text.startswith(("/", "./", "../", "~"))


def _form(ref: str, schemes: Schemes) -> str:
    if _looks_like_path(ref):
        return "path"
    head, slash, tail = ref.partition("/")
    if slash and head.lower() in schemes.providers and tail:
        return "provider"
    if slash and ":" not in ref and not ref.startswith(("hf.co/", "huggingface.co/")):
        return "repo"
    if ":" in ref or "/" in ref:
        return "tag"  # name:tag, hf.co/…, user/model:tag
    return "name"


def parse_ref(text: str, schemes: Schemes = NO_SCHEMES) -> ModelRef:
    """Parse `llama3.2:3b`, `ollama:llama3.2:3b`, `hf:Org/Repo`, `openai/gpt-4o`, `./m.gguf`."""
    if not isinstance(text, str):
        raise InvalidReference(f"a model reference must be text, not {type(text).__name__}")
    ref = text.strip()
    if not ref:
        raise InvalidReference("empty model reference", hint="name a model, e.g. llama3.2:3b")
    if _CONTROL.search(ref):
        raise InvalidReference(f"model reference {text!r} contains control characters")
    prefix, sep, rest = ref.partition(":")
    if sep and prefix.lower() in schemes.prefixes:  # `hf:org/repo/file.gguf` too
        if not rest.strip():
            raise InvalidReference(f"{text!r} names a backend but no model", hint=f"{prefix}:NAME")
        backend, name = schemes.prefixes[prefix.lower()], rest.strip()
        form = _form(name, schemes)
        if form == "path" and backend != schemes.forms.get("path"):
            form = "repo" if "/" in name else "name"  # a file in a repo, not one on this disk
        return ModelRef(text, backend, name, explicit=True, form=form)
    form = _form(ref, schemes)
    if form == "provider":
        head, _, tail = ref.partition("/")
        return ModelRef(text, schemes.providers[head.lower()], tail, form=form)
    return ModelRef(text, schemes.forms.get(form), ref, form=form)


def default_id(ref: ModelRef) -> str:
    """The registry id a new model gets from its reference: the name, or the file's stem."""
    if ref.is_path:
        return PurePath(ref.name).name.removesuffix(".gguf").removesuffix(".GGUF")
    if ref.form == "provider" and not ref.explicit:
        return ref.text.strip()  # keep `openai/gpt-4o` whole: that is how people write it
    return ref.name


# ---------------------------------------------------------------- facts read out of names

_BOUND_L = r"(?<![A-Za-z0-9.])"
_BOUND_R = r"(?![A-Za-z0-9])"
_MOE = re.compile(_BOUND_L + r"(\d+)x(\d+(?:\.\d+)?)([bBmM])" + _BOUND_R)
_PARAMS = re.compile(_BOUND_L + r"(\d+(?:\.\d+)?)([bBmMtT])" + _BOUND_R)
_UNIT = {"m": 10**6, "b": 10**9, "t": 10**12}


def parse_parameters_from_name(name: str) -> int | None:
    """Parameters a name states: `8b`, `70B`, `0.5B`, `135m`, `8x7b` (experts x size); else None.

    A mixture-of-experts name gives experts times expert size (an upper bound: experts share
    attention weights). Active-parameter markers such as `A3B` in `30B-A3B` are not counted.
    """
    match = _MOE.search(name)
    if match:
        experts, size, unit = match.groups()
        return round(int(experts) * float(size) * _UNIT[unit.lower()])
    match = _PARAMS.search(name)
    if match:
        size, unit = match.groups()
        return round(float(size) * _UNIT[unit.lower()])
    return None


_GGUF_TYPES = (
    r"IQ1_S|IQ1_M|IQ2_XXS|IQ2_XS|IQ2_S|IQ2_M|IQ3_XXS|IQ3_XS|IQ3_S|IQ3_M|IQ4_XS|IQ4_NL|"
    r"Q2_K_S|Q2_K|Q3_K_S|Q3_K_M|Q3_K_L|Q3_K|Q4_0_4_4|Q4_0_4_8|Q4_0_8_8|Q4_0|Q4_1|Q4_K_S|Q4_K_M|"
    r"Q4_K|Q5_0|Q5_1|Q5_K_S|Q5_K_M|Q5_K|Q6_K|Q8_0|Q8_K|TQ1_0|TQ2_0|MXFP4|BF16|F16|F32"
)
_OTHER_TYPES = {
    "fp16": "F16",
    "float16": "F16",
    "half": "F16",
    "fp32": "F32",
    "float32": "F32",
    "bf16": "BF16",
    "bfloat16": "BF16",
    "fp8": "FP8",
    "int8": "INT8",
    "8bit": "INT8",
    "int4": "INT4",
    "4bit": "INT4",
    "awq": "AWQ",
    "gptq": "GPTQ",
}
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(" + _GGUF_TYPES + "|" + "|".join(_OTHER_TYPES) + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def parse_quantization(name: str) -> str | None:
    """The quantization a name states, normalized: `Q4_K_M`, `Q8_0`, `F16`, `BF16`, `INT4`, …"""
    # Names write K-quants with dashes or dots too (`q4-k-m`); GGUF types use underscores.
    match = _QUANT.search(name.replace("-", "_").replace(".", "_"))
    if match is None:
        return None
    token = match.group(1)
    return _OTHER_TYPES.get(token.lower(), token.upper())


def normalize_quantization(text: str) -> str:
    """A quantization as a person writes it (`q4_k_m`, `fp16`), in its canonical spelling."""
    token = text.strip()
    match = _QUANT.fullmatch(token.replace("-", "_").replace(".", "_"))
    return (
        _OTHER_TYPES.get(token.lower(), token.upper().replace("-", "_")) if match else token.upper()
    )
