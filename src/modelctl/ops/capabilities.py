"""What a model can do, and how we know: declared by its backend, read from its metadata (a
GGUF chat template and its tool-call markers, a vision projector beside it, an embedding
architecture; a Hugging Face config), guessed from its name, or (on request) probed with real
requests. Every capability carries its sources.

    detect_capabilities(registry["qwen2.5-7b"])  → {"chat": ["metadata: chat template"], …}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import ModelctlError

if TYPE_CHECKING:
    from modelctl.record.model import Model
    from modelctl.runtime.requests import Requests

__all__ = ["detect_capabilities"]

# Markers chat templates use for tool calls, by family (Hermes/Qwen, Llama 3, Mistral, …).
TOOL_MARKERS = ("<tool_call>", "tool_calls", "<|python_tag|>", "[TOOL_CALLS]", "tools")
_EMBEDDING_ARCHES = {"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "xlm-roberta"}
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"embed|minilm|\bbge\b|\be5\b|gte-", "embeddings"),
    (r"(?<![a-z])(vl|vision|llava|pixtral|moondream)(?![a-z])", "vision"),
    (r"(?<![a-z])(r1|qwq|reason|think(ing)?)(?![a-z])", "reasoning"),
    (r"instruct|chat|-it(?![a-z])", "chat"),
)


def detect_capabilities(
    model: Model, *, probe: bool = False, requests: Requests | None = None
) -> dict[str, list[str]]:
    """Each capability found, with where it came from (in the order found); `probe` sends
    real requests through `requests`."""
    found: dict[str, list[str]] = {}

    def add(capability: str, source: str) -> None:
        found.setdefault(capability, [])
        if source not in found[capability]:
            found[capability].append(source)

    for capability in model.capabilities:
        add(str(capability.value if hasattr(capability, "value") else capability), "declared")
    for capability, source in _from_metadata(model):
        add(capability, f"metadata: {source}")
    for capability, source in _from_name(model):
        add(capability, f"name: {source}")
    if probe:
        if requests is None:
            raise ModelctlError("probing a model needs a request runner")
        for capability, source in _probe(requests, model).items():
            if source.startswith("no:"):
                found.pop(capability, None)  # a real request says otherwise
            else:
                add(capability, f"probe: {source}")
    return found


def _from_metadata(model: Model) -> list[tuple[str, str]]:
    location = model.file
    if not location:
        return []
    path = Path(location)
    if path.suffix.lower() == ".gguf" and path.is_file():
        return _gguf(path)
    if path.is_dir() and (path / "config.json").is_file():
        return _hf_config(path)
    return []


def _gguf(path: Path) -> list[tuple[str, str]]:
    from modelctl.fit.gguf_meta import read_gguf
    from modelctl.record.errors import InvalidGGUF

    try:
        info = read_gguf(path)
    except InvalidGGUF:
        return []
    out = []
    if info.architecture in _EMBEDDING_ARCHES:
        out.append(("embeddings", f"{info.architecture} architecture"))
    else:
        out.append(("completion", f"{info.architecture} architecture"))
    template = info.chat_template or ""
    if template:
        out.append(("chat", "chat template"))
        marker = next((m for m in TOOL_MARKERS if m in template), None)
        if marker:
            out.append(("tools", f"chat template mentions {marker}"))
    projector = next(iter(sorted(path.parent.glob("*mmproj*.gguf"))), None)
    if projector is not None:
        out.append(("vision", f"vision projector {projector.name}"))
    return out


def _hf_config(folder: Path) -> list[tuple[str, str]]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for arch in config.get("architectures") or []:
        if arch.endswith(("ForCausalLM", "ForConditionalGeneration")):
            out.append(("completion", f"config: {arch}"))
        if arch.endswith("ForConditionalGeneration") and "vision_config" in config:
            out.append(("vision", f"config: {arch} with a vision tower"))
        if arch.endswith("Model") and not arch.endswith("PreTrainedModel"):
            out.append(("embeddings", f"config: {arch} (an encoder)"))
    if (folder / "modules.json").is_file():
        out.append(("embeddings", "sentence-transformers modules.json"))
    try:
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        tokenizer = {}
    template = tokenizer.get("chat_template") or ""
    if isinstance(template, list):  # named templates
        template = " ".join(t.get("template", "") for t in template if isinstance(t, dict))
    if template:
        out.append(("chat", "tokenizer chat template"))
        marker = next((m for m in TOOL_MARKERS if m in template), None)
        if marker:
            out.append(("tools", f"chat template mentions {marker}"))
    return out


def _from_name(model: Model) -> list[tuple[str, str]]:
    names = {model.id, model.name or "", *(Path(ref).name for ref in model.refs.values())}
    text = " ".join(names).lower()  # names only: a folder on the way says nothing
    return [(cap, f"{match.group(0)!r}") for pattern, cap in _NAME_PATTERNS
            if (match := re.search(pattern, text))]  # fmt: skip


def _probe(requests: Requests, model: Model) -> dict[str, str]:
    """Real requests, one per capability in question: what answered, and what refused."""
    out: dict[str, str] = {}
    hello = [{"role": "user", "content": "Say hi."}]
    trials: dict[str, Any] = {
        "chat": lambda: requests.request("chat", model.id, hello, max_tokens=1, client="probe"),
        "completion": lambda: requests.request(
            "complete", model.id, "Hi", max_tokens=1, client="probe"
        ),
        "embeddings": lambda: requests.request("embed", model.id, ["hi"], client="probe"),
    }
    for capability, trial in trials.items():
        try:
            trial()
        except ModelctlError as exc:
            out[capability] = f"no: {exc.message}"
        else:
            out[capability] = "answered a request"
    return out
