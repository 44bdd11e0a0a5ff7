"""The registry: models as a mapping over the store, its query language, export and import."""

from modelctl.registry._registry import ImportReport, Registry

__all__ = ["ImportReport", "Registry"]
