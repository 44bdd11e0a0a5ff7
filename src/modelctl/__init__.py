"""modelctl: one control plane for every AI model you use.

    >>> from modelctl import ModelManager
    >>> manager = ModelManager(home="/tmp/modelctl-doc")
    >>> manager.registry.add({"id": "llama3.2:3b", "backend": "ollama"}, replace=True).backend
    'ollama'
    >>> manager.list_models(backend="ollama")[0].id
    'llama3.2:3b'

Public names load on first use, so `import modelctl` costs next to nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "Capability": "modelctl.kinds",
    "Catalog": "modelctl.catalog",
    "CatalogEntry": "modelctl.catalog",
    "Compatibility": "modelctl.fit",
    "Conflict": "modelctl.errors",
    "ImportFailed": "modelctl.errors",
    "ImportReport": "modelctl.registry",
    "InvalidModel": "modelctl.errors",
    "InvalidQuery": "modelctl.errors",
    "InvalidReference": "modelctl.errors",
    "InvalidRequest": "modelctl.errors",
    "MemoryEstimate": "modelctl.fit",
    "Model": "modelctl.model",
    "ModelManager": "modelctl.manager",
    "ModelNotFound": "modelctl.errors",
    "ModelRef": "modelctl.naming",
    "ModelctlError": "modelctl.errors",
    "NotFound": "modelctl.errors",
    "Pricing": "modelctl.model",
    "Purpose": "modelctl.kinds",
    "Recommendation": "modelctl.fit",
    "Registry": "modelctl.registry",
    "Settings": "modelctl.config",
    "SizeClass": "modelctl.kinds",
    "Status": "modelctl.kinds",
    "SystemInfo": "modelctl.hardware",
    "Task": "modelctl.kinds",
    "Usage": "modelctl.usage",
    "parse_ref": "modelctl.naming",
}

__all__ = [
    "Capability",
    "Catalog",
    "CatalogEntry",
    "Compatibility",
    "Conflict",
    "ImportFailed",
    "ImportReport",
    "InvalidModel",
    "InvalidQuery",
    "InvalidReference",
    "InvalidRequest",
    "MemoryEstimate",
    "Model",
    "ModelManager",
    "ModelNotFound",
    "ModelRef",
    "ModelctlError",
    "NotFound",
    "Pricing",
    "Purpose",
    "Recommendation",
    "Registry",
    "Settings",
    "SizeClass",
    "Status",
    "SystemInfo",
    "Task",
    "Usage",
    "__version__",
    "parse_ref",
]

if TYPE_CHECKING:
    from modelctl.catalog import Catalog, CatalogEntry
    from modelctl.config import Settings
    from modelctl.errors import (
        Conflict,
        ImportFailed,
        InvalidModel,
        InvalidQuery,
        InvalidReference,
        InvalidRequest,
        ModelctlError,
        ModelNotFound,
        NotFound,
    )
    from modelctl.fit import Compatibility, MemoryEstimate, Recommendation
    from modelctl.hardware import SystemInfo
    from modelctl.kinds import Capability, Purpose, SizeClass, Status, Task
    from modelctl.manager import ModelManager
    from modelctl.model import Model, Pricing
    from modelctl.naming import ModelRef, parse_ref
    from modelctl.registry import ImportReport, Registry
    from modelctl.usage import Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
