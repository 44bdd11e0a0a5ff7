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
    "Capability": "modelctl.record.kinds",
    "Catalog": "modelctl.fit.catalog",
    "CatalogEntry": "modelctl.fit.catalog",
    "Compatibility": "modelctl.fit.estimate",
    "Conflict": "modelctl.record.errors",
    "ImportFailed": "modelctl.record.errors",
    "ImportReport": "modelctl.registry",
    "InvalidModel": "modelctl.record.errors",
    "InvalidQuery": "modelctl.record.errors",
    "InvalidReference": "modelctl.record.errors",
    "InvalidRequest": "modelctl.record.errors",
    "MemoryEstimate": "modelctl.fit.estimate",
    "Model": "modelctl.record.model",
    "ModelManager": "modelctl.manager",
    "ModelNotFound": "modelctl.record.errors",
    "ModelRef": "modelctl.record.naming",
    "ModelctlError": "modelctl.record.errors",
    "NotFound": "modelctl.record.errors",
    "Pricing": "modelctl.record.model",
    "Purpose": "modelctl.record.kinds",
    "Recommendation": "modelctl.fit.estimate",
    "Registry": "modelctl.registry",
    "Settings": "modelctl.config",
    "SizeClass": "modelctl.record.kinds",
    "Status": "modelctl.record.kinds",
    "SystemInfo": "modelctl.fit.hardware",
    "Task": "modelctl.record.kinds",
    "Usage": "modelctl.store.ledger",
    "parse_ref": "modelctl.record.naming",
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
    from modelctl.config import Settings
    from modelctl.fit.catalog import Catalog, CatalogEntry
    from modelctl.fit.estimate import Compatibility, MemoryEstimate, Recommendation
    from modelctl.fit.hardware import SystemInfo
    from modelctl.manager import ModelManager
    from modelctl.record.errors import (
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
    from modelctl.record.kinds import Capability, Purpose, SizeClass, Status, Task
    from modelctl.record.model import Model, Pricing
    from modelctl.record.naming import ModelRef, parse_ref
    from modelctl.registry import ImportReport, Registry
    from modelctl.store.ledger import Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
