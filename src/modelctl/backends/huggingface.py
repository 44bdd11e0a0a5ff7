"""The Hugging Face cache (HF_HOME / HF_HUB_CACHE), read and changed by huggingface_hub itself."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from modelctl import naming
from modelctl.backends import Backend, BackendError, BackendStatus, DeletePlan, Handle, ProgressFn

if TYPE_CHECKING:
    from modelctl.model import Model

_EMBEDDING_HINTS = ("bert", "sentence", "minilm", "mpnet", "bge", "e5-", "gte-", "embed")


class HuggingFaceBackend(Backend):
    name = "huggingface"
    requires = ("huggingface_hub",)
    install_hint = "pip install huggingface_hub"

    @property
    def cache(self) -> Any:
        return self.settings.hf_cache

    def _scan(self) -> Any:
        from huggingface_hub import scan_cache_dir

        if not self.cache.is_dir():
            return None
        try:
            return scan_cache_dir(self.cache)
        except Exception as exc:  # CacheNotFound, a corrupt layout: one line
            raise BackendError(
                f"cannot read the Hugging Face cache at {self.cache}: {exc}"
            ) from None

    def status(self) -> BackendStatus:
        try:
            info = self._scan()
        except BackendError as exc:
            return BackendStatus(self.name, False, url=str(self.cache), error=exc.message)
        if info is None:
            return BackendStatus(
                self.name, True, url=str(self.cache), models=0, hint="the cache is empty"
            )
        count = sum(1 for r in info.repos if r.repo_type == "model")
        warnings = f"{len(info.warnings)} unreadable entries" if info.warnings else None
        return BackendStatus(self.name, True, url=str(self.cache), models=count, error=warnings)

    def _record(self, repo: Any) -> Model:
        from modelctl.model import Model

        config: dict[str, Any] = {}
        revision = max(repo.revisions, key=lambda r: r.last_modified, default=None)
        if revision is not None:
            for file in revision.files:
                if file.file_name == "config.json":
                    try:
                        config = json.loads(file.file_path.read_text())
                    except (OSError, ValueError):
                        config = {}
        lowered = repo.repo_id.lower()
        architectures = " ".join(config.get("architectures") or []).lower()
        embedding = any(h in lowered for h in _EMBEDDING_HINTS) and "causallm" not in architectures
        return Model.from_dict(
            {
                "id": repo.repo_id,
                "backend": self.name,
                "refs": {self.name: repo.repo_id},
                "tasks": ["embedding"]
                if embedding
                else ["chat"]
                if "instruct" in lowered
                else ["completion"],
                "capabilities": ["embeddings"] if embedding else ["completion", "streaming"],
                "parameters": naming.parse_parameters_from_name(repo.repo_id),
                "quantization": naming.parse_quantization(repo.repo_id)
                or {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(
                    config.get("torch_dtype", "")
                ),
                "context_length": config.get("max_position_embeddings"),
                "file_size": repo.size_on_disk,
                "location": str(repo.repo_path),
                "installed": True,
            },
            context=f"cached repo {repo.repo_id!r}",
        )

    def discover(self) -> list[Model]:
        info = self._scan()
        if info is None:
            return []
        return [self._record(r) for r in info.repos if r.repo_type == "model"]

    def install(self, ref: str, progress: ProgressFn | None = None, **options: Any) -> Model:
        from modelctl.backends._hub import snapshot

        repo = naming.parse_ref(ref).name
        snapshot(
            repo,
            self.cache,
            endpoint=self.settings.hf_endpoint,
            progress=progress,
            revision=options.get("revision"),
        )
        for model in self.discover():
            if model.id == repo:
                return model
        raise BackendError(f"{repo} downloaded but is not in the cache at {self.cache}")

    def load(self, model: Model, **options: Any) -> Handle:
        """transformers in this process, on the CPU or a GPU (extra `modelctl[transformers]`)."""
        from modelctl.backends.hf_runtime import TransformersHandle

        if not model.location:
            raise BackendError(
                f"{model.id} has no local files", hint=f"modelctl pull hf:{model.id}"
            )
        return TransformersHandle(model, model.location, **options)

    def plan_delete(self, ref: str) -> DeletePlan:
        """Every revision of a cached repo, through the hub library's own delete plan."""
        info = self._scan()
        repo_id = naming.parse_ref(ref).name
        repos = [
            r
            for r in (info.repos if info else [])
            if r.repo_id == repo_id and r.repo_type == "model"
        ]
        if not repos:
            raise BackendError(f"{repo_id} is not in the Hugging Face cache at {self.cache}")
        hashes = [rev.commit_hash for rev in repos[0].revisions]
        strategy = info.delete_revisions(*hashes)
        paths = tuple(
            str(p) for p in [*strategy.repos, *strategy.snapshots, *strategy.blobs, *strategy.refs]
        )
        return DeletePlan(
            self.name, repo_id, paths, strategy.expected_freed_size, execute=strategy.execute
        )
