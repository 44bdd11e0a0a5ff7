"""MLX (Apple silicon only): models converted for MLX, in the Hugging Face cache."""

from __future__ import annotations

import platform
import sys
from typing import TYPE_CHECKING

from modelctl.backends import Backend, BackendError, BackendStatus

if TYPE_CHECKING:
    from modelctl.record.model import Model


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


class MLXBackend(Backend):
    name = "mlx"
    runtimes = ("mlx-lm",)
    model_format = "mlx"

    def status(self) -> BackendStatus:
        if not apple_silicon():
            return BackendStatus(
                self.name,
                False,
                error=f"MLX runs on Apple silicon only ({sys.platform} {platform.machine()} here)",
            )
        import importlib.util

        if importlib.util.find_spec("mlx_lm") is None:
            return BackendStatus(
                self.name, False, error="mlx-lm is not installed", hint="pip install mlx-lm"
            )
        return BackendStatus(self.name, True, models=len(self.discover()))

    def discover(self) -> list[Model]:
        if not apple_silicon():
            raise BackendError("MLX runs on Apple silicon only")
        from modelctl.backends._hub import cached_model, scan_cache

        info = scan_cache(self.settings.hf_cache)
        repos = [r for r in (info.repos if info else []) if r.repo_type == "model"]
        return [cached_model(r, self.name) for r in repos if "mlx" in r.repo_id.lower()]
