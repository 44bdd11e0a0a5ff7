"""The Hugging Face cache (HF_HOME / HF_HUB_CACHE), read and changed by huggingface_hub itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl.backends import Backend, BackendError, BackendStatus, DeletePlan, Handle, ProgressFn
from modelctl.backends._hub import cached_model, scan_cache

if TYPE_CHECKING:
    from modelctl.record.model import Model


class HuggingFaceBackend(Backend):
    name = "huggingface"
    requires = ("huggingface_hub",)
    install_hint = "pip install huggingface_hub"
    runtimes = ("transformers",)
    prefixes = ("hf",)
    forms = ("repo",)
    model_format = "safetensors"
    install_rank = 30

    @property
    def cache(self) -> Any:
        return self.settings.hf_cache

    def _scan(self) -> Any:
        return scan_cache(self.cache)

    def status(self) -> BackendStatus:
        try:
            info = self._scan()
        except BackendError as exc:
            return BackendStatus(
                self.name, False, url=str(self.cache), error=exc.message,
                hint="set HF_HOME to your Hugging Face cache",
            )  # fmt: skip
        if info is None:
            return BackendStatus(
                self.name, True, url=str(self.cache), models=0, hint="the cache is empty"
            )
        count = sum(1 for r in info.repos if r.repo_type == "model")
        warnings = f"{len(info.warnings)} unreadable entries" if info.warnings else None
        return BackendStatus(self.name, True, url=str(self.cache), models=count, error=warnings)

    def discover(self) -> list[Model]:
        info = self._scan()
        if info is None:
            return []
        return [cached_model(r, self.name) for r in info.repos if r.repo_type == "model"]

    def install(self, ref: str, progress: ProgressFn | None = None, **options: Any) -> Model:
        from modelctl.backends._hub import snapshot

        repo = self.own_name(ref)
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

    def download_size(self, ref: str, **options: Any) -> int | None:
        """The whole repository's size (a snapshot downloads every file), as the Hub lists it."""
        from modelctl.backends._hub import file_sizes

        try:
            sizes = file_sizes(
                self.own_name(ref), endpoint=self.settings.hf_endpoint,
                revision=options.get("revision"),
            )  # fmt: skip
        except BackendError:
            return None  # the install itself says what is wrong
        return sum(sizes.values()) or None

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
        repo_id = self.own_name(ref)
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
