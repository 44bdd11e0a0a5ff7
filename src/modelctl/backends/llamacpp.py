"""GGUF files in the model folders (`model_dirs`), read in place; llama.cpp runs them."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.backends import (
    Backend,
    BackendError,
    BackendStatus,
    DeletePlan,
    Handle,
    NotSupported,
    ProgressFn,
    inside,
    unlink_inside,
)
from modelctl.fit.gguf_meta import _SHARD, read_gguf, shard_paths
from modelctl.record import naming
from modelctl.record.errors import (
    InvalidGGUF,
    InvalidReference,
    InvalidRequest,
    NotInstalled,
    UnsafePath,
)

if TYPE_CHECKING:
    from modelctl.fit.gguf_meta import GGUFInfo
    from modelctl.record.model import Model

_EMBEDDING_ARCHES = {
    "bert",
    "nomic-bert",
    "jina-bert-v2",
    "xlm-roberta",
    "modern-bert",
    "t5encoder",
}


class LlamaCppBackend(Backend):
    name = "llamacpp"
    requires = ("gguf",)
    install_hint = "pip install gguf"
    runtimes = ("llama.cpp",)
    prefixes = ("gguf",)
    forms = ("path",)  # a .gguf file on this disk
    catalog_key = "gguf"
    model_format = "gguf"
    install_rank = 20

    @property
    def folders(self) -> list[Path]:
        return [Path(d) for d in self.settings.model_dirs]

    def gguf_files(self) -> list[Path]:
        """The first part of every GGUF model in the folders (projectors, later parts skipped)."""
        found: list[Path] = []
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*.gguf")):
                lowered = path.name.lower()
                if "mmproj" in lowered or lowered.startswith("."):
                    continue
                shard = _SHARD.match(path.name)
                if shard and int(shard.group("index")) != 1:
                    continue
                found.append(path)
        return found

    def status(self) -> BackendStatus:
        existing = [str(f) for f in self.folders if f.is_dir()]
        if not existing:
            return BackendStatus(
                self.name, True, url=", ".join(map(str, self.folders)), models=0,
                hint="no model folder yet: `modelctl pull` creates it, or set model_dirs",
            )  # fmt: skip
        return BackendStatus(
            self.name, True, url=", ".join(existing), models=len(self.gguf_files())
        )

    def record(self, path: str | os.PathLike[str], model_id: str | None = None) -> Model:
        """The record for one GGUF file, read from its metadata."""
        path = Path(path)
        return self._record(path, read_gguf(path), model_id or path.name.removesuffix(".gguf"))

    def _record(self, path: Path, info: GGUFInfo, model_id: str) -> Model:
        from modelctl.record.model import Model

        embedding = info.architecture in _EMBEDDING_ARCHES
        template = info.chat_template or ""
        capabilities = ["embeddings"] if embedding else ["completion", "streaming"]
        if template:
            capabilities.append("chat")
        if "tool" in template:
            capabilities.append("tools")
        stem = _SHARD.sub(r"\g<stem>", path.name).removesuffix(".gguf")
        return Model.from_dict(
            {
                "id": model_id,
                "name": info.name,
                "backend": self.name,
                "refs": {self.name: str(path)},
                "tasks": ["embedding"] if embedding else (["chat"] if template else ["completion"]),
                "capabilities": capabilities,
                "family": info.architecture or None,
                "parameters": info.parameters or None,
                "quantization": info.quantization or naming.parse_quantization(stem),
                "context_length": info.context_length,
                "file_size": info.file_size,
                "location": str(path),
                "installed": True,
            },
            context=f"GGUF file {path}",
        )

    def discover(self) -> list[Model]:
        """Every readable GGUF model; an unreadable file is skipped, never fatal."""
        self.skipped: list[str] = []
        models: list[Model] = []
        seen: dict[str, int] = {}
        for path in self.gguf_files():
            try:
                info = read_gguf(path)
            except InvalidGGUF as exc:
                self.skipped.append(f"{path}: {exc.message}")
                continue
            if info.architecture == "clip":  # a vision projector, not a model
                continue
            stem = _SHARD.sub(r"\g<stem>", path.name)
            base = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
            seen[base] = seen.get(base, 0) + 1
            model_id = base if seen[base] == 1 else f"{path.parent.name}/{base}"
            models.append(self._record(path, info, model_id))
        return models

    def install(self, ref: str, progress: ProgressFn | None = None, **options: Any) -> Model:
        """Download `ORG/REPO/FILE.gguf` (or `ORG/REPO` with quantization=Q4_K_M) from the hub."""
        from modelctl.backends._hub import download_file

        repo, filename = self._pick_file(ref, options.get("quantization"))
        folder = self.folders[0] / repo.replace("/", "__")
        folder.mkdir(parents=True, exist_ok=True)
        first = None
        for part in self._parts(repo, filename):
            path = download_file(
                repo, part, folder, endpoint=self.settings.hf_endpoint, progress=progress
            )
            first = first or path
        assert first is not None
        return self._record(first, read_gguf(first), first.name.removesuffix(".gguf"))

    def download_size(self, ref: str, **options: Any) -> int | None:
        """The GGUF file's size (every shard of a split one), as the Hub lists it."""
        from modelctl.backends._hub import file_sizes

        try:
            repo, filename = self._pick_file(ref, options.get("quantization"))
            sizes = file_sizes(repo, endpoint=self.settings.hf_endpoint)
        except BackendError:
            return None  # the install itself says what is wrong
        parts = self._parts(repo, filename)
        return sum(sizes[p] for p in parts) if all(p in sizes for p in parts) else None

    def _pick_file(self, ref: str, quantization: str | None) -> tuple[str, str]:
        head, sep, rest = ref.partition(":")
        if sep and head.lower() == "hf":  # a Hub file, as the huggingface backend writes it
            ref = rest.strip()
        ref = self.own_name(ref)
        if ref.startswith(("/", "./", "../", "~")) or os.path.isabs(ref):
            raise InvalidReference(
                f"{ref!r} is a path on this disk: pull downloads from the Hub",
                hint="register a GGUF file with `modelctl add PATH`",
            )
        parts = ref.strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise InvalidReference(f"{ref!r} is not ORG/REPO or ORG/REPO/FILE.gguf")
        if len(parts) >= 3 and parts[-1].lower().endswith(".gguf"):
            return "/".join(parts[:2]), "/".join(parts[2:])
        if len(parts) != 2:
            raise InvalidReference(
                f"{ref!r} names no GGUF file",
                hint="write ORG/REPO/FILE.gguf, or ORG/REPO --quant Q4_K_M",
            )
        repo = ref
        files = self._repo_files(repo)
        ggufs = [f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower()]
        if quantization:
            want = naming.normalize_quantization(quantization)
            ggufs = [f for f in ggufs if naming.parse_quantization(Path(f).name) == want]
        ggufs = [f for f in ggufs if not _SHARD.match(Path(f).name) or "-00001-of-" in f]
        if len(ggufs) != 1:
            listing = ", ".join(sorted(ggufs)[:6]) or "none"
            raise BackendError(
                f"{repo} has {len(ggufs)} matching GGUF files ({listing})",
                hint="name one: ORG/REPO/FILE.gguf, or pick with --quant",
            )
        return repo, ggufs[0]

    def _repo_files(self, repo: str) -> list[str]:
        from huggingface_hub import HfApi

        from modelctl.backends._hub import hub_error

        api = HfApi(endpoint=self.settings.hf_endpoint, token=os.environ.get("HF_TOKEN") or None)
        try:
            return api.list_repo_files(repo)
        except Exception as exc:  # the hub library raises many kinds: one line each
            raise hub_error(exc, repo, self.settings.hf_endpoint) from None

    def _parts(self, repo: str, filename: str) -> list[str]:
        if not _SHARD.match(Path(filename).name):
            return [filename]
        return [
            str(Path(filename).parent / p.name).removeprefix("./") for p in shard_paths(filename)
        ]

    def load(self, model: Model, **options: Any) -> Handle:
        path = model.location or model.refs.get(self.name)
        if not path or not os.path.isfile(path):
            raise BackendError(f"{model.id} has no GGUF file here ({path})", hint="modelctl sync")
        return LlamaCppHandle(model, path, **options)

    def plan_delete(self, ref: str) -> DeletePlan:
        """Remove a GGUF model (all its parts) that lies inside a model folder; nothing else."""
        path = Path(os.path.expanduser(ref))
        matches = [p for p in self.gguf_files() if p == path or p.name.removesuffix(".gguf") == ref]
        if not path.is_absolute() and not matches:
            if ".." in path.parts:
                raise UnsafePath(f"{ref!r} leads outside the model folders")
            raise NotInstalled(f"no GGUF model {ref!r} in {', '.join(map(str, self.folders))}")
        target = matches[0] if matches else path
        for folder in self.folders:
            try:  # a link is the model's own entry: it goes, as a link; its target stays
                safe = inside(folder, target, follow=False)
            except BackendError:
                continue
            parts = [
                inside(folder, p, follow=False)
                for p in shard_paths(safe)
                if p.exists() or p.is_symlink()
            ]
            if not parts:
                raise NotInstalled(f"{safe} does not exist")
            size = sum(p.lstat().st_size for p in parts)
            linked = [p for p in parts if p.is_symlink()]
            note = f"{len(linked)} link(s): their targets stay" if linked else None
            return DeletePlan(
                self.name, str(safe), tuple(map(str, parts)), size, note=note,
                execute=partial(unlink_inside, folder, parts),
            )  # fmt: skip
        raise UnsafePath(
            f"{ref!r} is not inside a model folder ({', '.join(map(str, self.folders))})",
            hint="modelctl deletes only files in its model folders; remove others yourself",
        )


def _plain(value: Any, top: int | None = None) -> Any:
    """llama-cpp-python's answer with its NumPy numbers (a logprob is a float32) as Python's,
    and `top` alternatives to a chat token at most (it adds the token it chose)."""
    if isinstance(value, dict):
        plain = {k: _plain(v, top) for k, v in value.items()}
        if top is not None and isinstance(plain.get("top_logprobs"), list) and "token" in plain:
            plain["top_logprobs"] = plain["top_logprobs"][:top]
        return plain
    if isinstance(value, list):
        return [_plain(v, top) for v in value]
    if type(value).__module__ == "numpy":
        return value.item()
    return value


def _grammar_options(options: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `response_format` as llama-cpp-python takes it: a JSON schema (`json_schema`)
    or any JSON (`json_object`, with an Ollama-style `schema`) becomes a grammar the sampler
    follows, so the answer is JSON of that shape; `text` is no constraint."""
    asked = options.get("response_format")
    if not isinstance(asked, dict):
        return options
    kind = asked.get("type")
    if kind == "json_schema":
        schema = (asked.get("json_schema") or {}).get("schema")
        wanted = {"type": "json_object"} | ({"schema": schema} if schema else {})
    elif kind == "json_object":
        wanted = {"type": "json_object"} | (
            {"schema": asked["schema"]} if asked.get("schema") else {}
        )
    else:
        return {k: v for k, v in options.items() if k != "response_format"}
    return {**options, "response_format": wanted}


def _text_length(content: Any) -> int:
    """Characters of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


def _default_context(model: Model, path: str) -> int:
    """The context a load gets when none is asked for: what the memory estimate assumes (the
    file's trained context, else the record's, at most DEFAULT_CONTEXT), so that the budget
    counts what is really allocated."""
    from modelctl.fit.estimate import DEFAULT_CONTEXT

    try:
        trained = read_gguf(path).context_length
    except InvalidGGUF:
        trained = None
    return min(trained or model.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)


class LlamaCppHandle(Handle):
    """A GGUF model in this process through llama-cpp-python; chat uses the file's template."""

    device = "cpu"
    reloads_for = ("context", "embedding", "gpu_layers", "logits")

    def __init__(self, model: Model, path: str, **options: Any) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise BackendError(
                "running GGUF models needs llama-cpp-python",
                hint="pip install 'modelctl[llamacpp]' (builds llama.cpp: several minutes)",
            ) from None
        self.model_id = model.id
        self._lock = threading.Lock()
        self.embedding = bool(options.get("embedding", "embedding" in model.tasks))
        # every position's logits kept (context x vocabulary floats): what logprobs need
        self.logits = self.gives_logprobs = bool(options.get("logits"))
        context = options.get("context") or _default_context(model, path)
        gpu_layers = int(options.get("gpu_layers", 0))
        try:
            self.llm = llama_cpp.Llama(
                model_path=path, n_ctx=int(context), n_threads=options.get("threads"),
                n_gpu_layers=gpu_layers, embedding=self.embedding, logits_all=self.logits,
                verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {path}: {exc}") from None
        self.device = "gpu" if gpu_layers and llama_cpp.llama_supports_gpu_offload() else "cpu"
        self.context = self.llm.n_ctx()
        self.has_template = bool((self.llm.metadata or {}).get("tokenizer.chat_template"))
        self._longest: int | None = None  # the longest token's spelling, in bytes, when asked
        self._counted = [0, 0]  # the request running now: prompt tokens, tokens generated
        self.llm.generate = self._counting(self.llm.generate)  # type: ignore[method-assign]

    def _counting(self, generate: Any) -> Any:
        """llama-cpp-python's token loop, counted: a stream's chunks are not its tokens (a
        chunk waits for a character's last byte), and its stream reports no usage."""
        import llama_cpp

        vocab = self.llm._model.vocab
        counted = self._counted

        def counting(tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
            counted[:] = [len(tokens), 0]
            for token in generate(tokens, *args, **kwargs):
                # what its own usage counts: an end of generation (any: <|eot_id|> too) is not
                if not llama_cpp.llama_vocab_is_eog(vocab, token):
                    counted[1] += 1
                yield token

        return counting

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        if not self.has_template:
            raise NotSupported(
                f"{self.model_id} has no chat template", hint="use completion (modelctl run --raw)"
            )
        self._could_fit(sum(_text_length(m.get("content")) for m in messages))
        options = _grammar_options(options)
        tools, choice = options.get("tools"), options.get("tool_choice")
        if tools and choice == "none":  # no call: the tools are not shown either
            options = {k: v for k, v in options.items() if k not in ("tools", "tool_choice")}
        elif tools and not isinstance(choice, dict):  # a named tool: llama-cpp-python forces it
            from modelctl.backends import _tool_calls

            if choice == "required":  # one call, under a grammar
                if options.get("response_format"):
                    raise InvalidRequest(
                        "tool_choice required and response_format: one grammar at a time",
                        hint="ask for the call, or for the format",
                    )
                options = {k: v for k, v in options.items() if k != "tool_choice"}
                options["response_format"] = _tool_calls.required_format(tools)
            create = self.llm.create_chat_completion
            answer = self._locked(create, False, messages=messages, **options)
            answer = _tool_calls.with_calls(answer, tools)  # read from the model's markers
            return _tool_calls.as_chunks(answer) if stream else answer
        return self._locked(self.llm.create_chat_completion, stream, messages=messages, **options)

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        self._could_fit(len(prompt))
        return self._locked(self.llm.create_completion, stream, prompt=prompt, **options)

    def _within_reach(self, text: str) -> str:
        """An embedding input cut to what the context could hold at most (llama.cpp truncates
        what is past the context anyway): tokenizing the rest only costs time."""
        n_ctx = self.llm.n_ctx()
        if len(text) <= n_ctx * 4:
            return text
        return text[: n_ctx * max(1, self._longest_token())]

    def _longest_token(self) -> int:
        if self._longest is None:
            with self._lock:  # once, and only for long texts: every token's spelling, in bytes
                vocab = range(self.llm.n_vocab())
                self._longest = max((len(self.llm.detokenize([t])) for t in vocab), default=1)
        return self._longest

    def _could_fit(self, characters: int) -> None:
        """Refuse at once a prompt too long for the context whatever its tokens: llama.cpp's
        tokenizer takes time that grows faster than the text (a 1 MB prompt took minutes to
        be refused). A token covers at most as many characters as its longest spelling."""
        n_ctx = self.llm.n_ctx()
        if characters <= n_ctx * 4:  # the common case: nothing to compute
            return
        if characters > n_ctx * max(1, self._longest_token()):
            raise InvalidRequest(
                f"{self.model_id}: the prompt's {characters:,} characters cannot fit a context "
                f"of {n_ctx:,} tokens (a token here spells at most {self._longest} bytes)",
                hint="shorten the prompt, or load the model with a larger context",
            )

    def _locked(self, create: Any, stream: bool, **kwargs: Any) -> Any:
        """One request at a time: a llama.cpp context is not safe to share between threads."""
        kwargs["logits_processor"] = [self._end_at_context]
        if kwargs.get("logprobs") is not None and kwargs["logprobs"] is not False:
            if not self.logits:
                raise NotSupported(
                    f"{self.model_id} was loaded without its logits",
                    hint="load it with logits: true",
                )
            if "messages" in kwargs and kwargs.get("top_logprobs") is None:
                kwargs["top_logprobs"] = 0  # chat's logprobs alone: each token's, no others
            plain = partial(_plain, top=kwargs.get("top_logprobs"))
            if not stream:
                with self._lock, self._refusals():
                    return plain(create(stream=False, model=self.model_id, **kwargs))
            return map(plain, self._locked_stream(create, kwargs))
        if not stream:
            with self._lock, self._refusals():
                return create(stream=False, model=self.model_id, **kwargs)
        return self._locked_stream(create, kwargs)

    def _locked_stream(self, create: Any, kwargs: dict[str, Any]) -> Iterator[Any]:
        """The chunks as llama-cpp-python streams them, then one with no choices and the usage
        (prompt and completion tokens), as OpenAI ends a stream asked for its usage."""
        with self._lock, self._refusals():  # held until the stream ends or is closed
            self._counted[:] = [0, 0]
            last = None
            for chunk in create(stream=True, model=self.model_id, **kwargs):
                yield chunk  # as it comes: a token held back is a token late
                last = chunk
            if last is not None:
                prompt, completion = self._counted
                usage = {"prompt_tokens": prompt, "completion_tokens": completion}
                head = {key: last.get(key) for key in ("id", "object", "created", "model")}
                # OpenAI's last chunk when asked for usage: no choices, the usage; the gateway
                # passes it on only to a client that asked
                yield head | {"choices": [], "usage": usage | {"total_tokens": prompt + completion}}

    def _end_at_context(self, input_ids: Any, logits: Any) -> Any:
        """End of text once the context is full: llama-cpp-python counts `max_tokens` only after
        a character's last byte, so a character cut at the context's end ran past it (and
        llama.cpp's decode failed: a 500)."""
        if len(input_ids) >= self.context:
            logits[:] = float("-inf")
            logits[self.llm.token_eos()] = 0.0
        return logits

    @contextmanager
    def _refusals(self) -> Iterator[None]:
        """llama-cpp-python's ValueError for a request it cannot take, as a clear error."""
        try:
            yield
        except ValueError as exc:
            raise InvalidRequest(
                f"{self.model_id}: {exc}",
                hint="shorten the prompt, or load the model with a larger context",
            ) from None

    def embed(self, inputs: list[str]) -> list[list[float]]:
        if not self.embedding:
            raise NotSupported(
                f"{self.model_id} was not loaded for embeddings", hint="load it with embedding=True"
            )
        vectors = []
        for text in inputs:
            text = self._within_reach(text)
            with self._lock:
                out = self.llm.embed(text)
            if out and isinstance(out[0], list):  # one vector per token: mean-pool them
                out = [sum(col) / len(out) for col in zip(*out, strict=True)]
            vectors.append(out)
        return vectors

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
            del llm
            _give_back_memory()


def _give_back_memory() -> None:
    """Hand freed heap back to the OS: glibc keeps it in its arenas otherwise."""
    import contextlib
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
