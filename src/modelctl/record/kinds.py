"""The vocabularies of a Model record: tasks, capabilities, size classes, statuses, purposes.

Plain enums with no dependencies, so the command line can offer and check them cheaply.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Capability", "Purpose", "SizeClass", "Status", "Task"]


class Task(StrEnum):
    """What a model is for."""

    CHAT = "chat"
    COMPLETION = "completion"
    CODE = "code"
    REASONING = "reasoning"
    EMBEDDING = "embedding"
    VISION = "vision"  # also written "multimodal"
    IMAGE = "image"


class Capability(StrEnum):
    """What a model can do through its API."""

    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDINGS = "embeddings"
    TOOLS = "tools"
    VISION = "vision"
    STREAMING = "streaming"
    JSON_MODE = "json_mode"
    REASONING = "reasoning"


class SizeClass(StrEnum):
    """tiny < 1B parameters, small 1-7B, medium 7-30B, large > 30B; a "7b" by name is small."""

    TINY = "tiny"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class Status(StrEnum):
    """Where a model stands: on its backend, or in the lifecycle of a loaded model."""

    AVAILABLE = "available"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"
    FAILED = "failed"
    MISSING = "missing"  # registered, but its backend no longer has it
    DELETING = "deleting"  # its files are being deleted: no request may load it meanwhile


class Purpose(StrEnum):
    """What a model is best picked for."""

    SPEED = "speed"
    BALANCED = "balanced"
    QUALITY = "quality"
    SPECIALIZED = "specialized"
