"""Read a user's model reference, whatever its form, and the facts a name carries.

>>> parse_ref("ollama:llama3.2:3b")
ModelRef(text='ollama:llama3.2:3b', backend='ollama', name='llama3.2:3b', explicit=True)
>>> parse_ref("hf:Qwen/Qwen2.5-0.5B-Instruct").backend, parse_ref("openai/gpt-4o").name
('huggingface', 'gpt-4o')
>>> parse_parameters_from_name("mixtral:8x7b"), parse_quantization("llama3.1:8b-instruct-q4_K_M")
(56000000000, 'Q4_K_M')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from modelctl.errors import InvalidReference

__all__ = [
    "BACKEND_PREFIXES",
    "ModelRef",
    "default_id",
    "normalize_quantization",
    "parse_parameters_from_name",
    "parse_quantization",
    "parse_ref",
]

# Prefixes a user may write before a name (`hf:org/repo`), and the backend each one means.
BACKEND_PREFIXES: dict[str, str] = {
    "ollama": "ollama",
    "hf": "huggingface",
    "huggingface": "huggingface",
    "gguf": "llamacpp",
    "llamacpp": "llamacpp",
    "lmstudio": "lmstudio",
    "mlx": "mlx",
    "openai": "openai",
    "anthropic": "anthropic",
    "openrouter": "openrouter",
}
# Providers written LiteLLM-style, `provider/model`; any other `org/name` is a Hugging Face repo.
_PROVIDER_SLASH = {"openai", "anthropic", "openrouter", "azure", "gemini", "mistral", "groq"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference: which backend it names (None: any) and the name that backend uses."""

    text: str
    backend: str | None
    name: str
    explicit: bool = False  # the backend was written out (`ollama:…`), not guessed

    @property
    def is_path(self) -> bool:
        return self.backend == "llamacpp" and _looks_like_path(self.name)


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(".gguf") or text.startswith(("/", "./", "../", "~"))


def parse_ref(text: str) -> ModelRef:
    """Parse `llama3.2:3b`, `ollama:llama3.2:3b`, `hf:Org/Repo`, `openai/gpt-4o`, `./m.gguf`."""
    if not isinstance(text, str):
        raise InvalidReference(f"a model reference must be text, not {type(text).__name__}")
    ref = text.strip()
    if not ref:
        raise InvalidReference("empty model reference", hint="name a model, e.g. llama3.2:3b")
    if _CONTROL.search(ref):
        raise InvalidReference(f"model reference {text!r} contains control characters")
    prefix, sep, rest = ref.partition(":")
    if sep and prefix.lower() in BACKEND_PREFIXES:  # `hf:org/repo/file.gguf` too
        if not rest.strip():
            raise InvalidReference(f"{text!r} names a backend but no model", hint=f"{prefix}:NAME")
        return ModelRef(text, BACKEND_PREFIXES[prefix.lower()], rest.strip(), explicit=True)
    if _looks_like_path(ref):
        return ModelRef(text, "llamacpp", ref, explicit=False)
    head, slash, tail = ref.partition("/")
    if slash and head.lower() in _PROVIDER_SLASH and tail:
        backend = BACKEND_PREFIXES.get(head.lower(), "openai")
        return ModelRef(text, backend, tail, explicit=False)
    if slash and ":" not in ref and not ref.startswith(("hf.co/", "huggingface.co/")):
        return ModelRef(text, "huggingface", ref, explicit=False)
    if ":" in ref or "/" in ref:
        return ModelRef(text, "ollama", ref, explicit=False)  # name:tag, hf.co/…, user/model:tag
    return ModelRef(text, None, ref, explicit=False)


def default_id(ref: ModelRef) -> str:
    """The registry id a new model gets from its reference: the name, or the file's stem."""
    if ref.is_path:
        return PurePath(ref.name).name.removesuffix(".gguf").removesuffix(".GGUF")
    if ref.backend in _PROVIDER_SLASH and not ref.explicit:
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
