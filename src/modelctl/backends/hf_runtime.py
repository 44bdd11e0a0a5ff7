"""Hugging Face models in process with transformers (torch imported here only, on load).

Causal language models answer chat (through the tokenizer's chat template) and completion,
streaming through a TextIteratorStreamer; encoder models give sentence embeddings, pooled as
their sentence-transformers configuration says (mean pooling, then normalized when asked).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.backends import BackendError, Handle, NotSupported, response

if TYPE_CHECKING:
    from modelctl.record.model import Model


def model_folder(location: str) -> Path:
    """A folder with config.json: the folder itself, or a cache repo's newest snapshot."""
    path = Path(location)
    if (path / "config.json").is_file():
        return path
    snapshots = sorted((path / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    for snapshot in reversed(snapshots):
        if (snapshot / "config.json").is_file():
            return snapshot
    raise BackendError(f"no model files (config.json) in {location}", hint="modelctl pull it again")


class TransformersHandle(Handle):
    reloads_for = ("embedding",)

    def __init__(self, model: Model, location: str, **options: Any) -> None:
        # one request at a time: a fast tokenizer refuses concurrent use ("Already borrowed")
        self._lock = threading.Lock()
        try:
            import torch
            import transformers
        except ImportError:
            raise BackendError(
                "running Hugging Face models needs torch and transformers",
                hint="pip install 'modelctl[transformers]'",
            ) from None
        self.model_id, self.torch = model.id, torch
        folder = model_folder(location)
        wanted = options.get("device")
        self.device = wanted or ("cuda" if torch.cuda.is_available() else "cpu")
        self.embedding = bool(options.get("embedding", "embedding" in model.tasks))
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            kind = transformers.AutoModel if self.embedding else transformers.AutoModelForCausalLM
            self.model = kind.from_pretrained(folder).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise BackendError(f"transformers could not load {folder}: {exc}") from None
        self.normalize = _normalizes(folder)
        self.device = "gpu" if self.device.startswith("cuda") else "cpu"

    # ------------------------------------------------------------------ generation

    def _generate_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        temperature = options.get("temperature")
        kwargs: dict[str, Any] = {"max_new_tokens": int(options.get("max_tokens") or 128)}
        if temperature:
            kwargs |= {"do_sample": True, "temperature": float(temperature)}
            if options.get("top_p") is not None:
                kwargs["top_p"] = float(options["top_p"])
            if options.get("top_k") is not None:
                kwargs["top_k"] = int(options["top_k"])
        else:
            kwargs["do_sample"] = False
        if options.get("seed") is not None:
            self.torch.manual_seed(int(options["seed"]))
        eos = self.tokenizer.eos_token_id or self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        return kwargs | {"eos_token_id": eos, "pad_token_id": pad}

    def _generating(self) -> None:
        if self.embedding:
            raise NotSupported(f"{self.model_id} is an embedding model", hint="use embed")

    def _run(self, prompt_ids: Any, options: dict[str, Any], stream: bool, kind: str) -> Any:
        kwargs = self._generate_kwargs(options)
        inputs = {"input_ids": prompt_ids.to(self.model.device)}
        prompt_tokens = int(prompt_ids.shape[-1])
        if stream:
            return self._stream(inputs, kwargs, kind)
        with self._lock, self.torch.no_grad():
            output = self.model.generate(**inputs, **kwargs)
            new = output[0][prompt_tokens:]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= kwargs["max_new_tokens"] else "stop"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(new),
                 "total_tokens": prompt_tokens + len(new)}  # fmt: skip
        choice: dict[str, Any] = {"finish_reason": finish}
        choice |= (
            {"message": {"role": "assistant", "content": text}}
            if kind == "chat"
            else {"text": text}
        )
        return response(
            self.model_id, "chat.completion" if kind == "chat" else "text_completion", choice, usage
        )

    def _stream(
        self, inputs: dict[str, Any], kwargs: dict[str, Any], kind: str
    ) -> Iterator[dict[str, Any]]:
        from transformers import TextIteratorStreamer

        with self._lock:  # held until the stream ends or is closed
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True
            )
            worker = threading.Thread(
                target=self._generate_quietly, args=(inputs, kwargs, streamer), daemon=True
            )
            worker.start()
            name = "chat.completion.chunk" if kind == "chat" else "text_completion"
            for piece in streamer:
                if piece:
                    body = {"delta": {"content": piece}} if kind == "chat" else {"text": piece}
                    yield response(self.model_id, name, body | {"finish_reason": None})
            worker.join()
        yield response(
            self.model_id,
            name,
            ({"delta": {}} if kind == "chat" else {"text": ""}) | {"finish_reason": "stop"},
        )

    def _generate_quietly(
        self, inputs: dict[str, Any], kwargs: dict[str, Any], streamer: Any
    ) -> None:
        with self.torch.no_grad():
            self.model.generate(**inputs, **kwargs, streamer=streamer)

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        self._generating()
        if not getattr(self.tokenizer, "chat_template", None):
            raise NotSupported(f"{self.model_id} has no chat template", hint="use completion")
        with self._lock:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt"
            )
        if not hasattr(ids, "shape"):  # newer tokenizers may return a BatchEncoding
            ids = ids["input_ids"]
        return self._run(ids, options, stream, "chat")

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        self._generating()
        with self._lock:
            ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        ids = ids["input_ids"]
        return self._run(ids, options, stream, "completion")

    # ------------------------------------------------------------------ embeddings

    def embed(self, inputs: list[str]) -> list[list[float]]:
        if not self.embedding:
            raise NotSupported(
                f"{self.model_id} was not loaded for embeddings", hint="load it with embedding=True"
            )
        torch = self.torch
        with self._lock, torch.no_grad():
            batch = self.tokenizer(inputs, padding=True, truncation=True, return_tensors="pt")
            batch = batch.to(self.model.device)
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().tolist()

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        import gc

        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()


def _normalizes(folder: Path) -> bool:
    """sentence-transformers lists a Normalize module when its embeddings are unit vectors."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    return any("Normalize" in str(m.get("type", "")) for m in modules)
