"""Human quantities in and out: byte sizes (`4.7GB`, `8GiB`), counts (`128k`), parameters (`8B`).

>>> parse_bytes("4.7GB"), parse_bytes("8G"), format_bytes(4_683_087_519)
(4700000000, 8589934592, '4.7 GB')
>>> parse_count("128k"), parse_parameters("8B"), format_parameters(494_032_768)
(131072, 8000000000, '494M')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "format_bytes",
    "format_memory",
    "format_parameters",
    "parse_bytes",
    "parse_count",
    "parse_duration",
    "parse_field",
    "parse_parameters",
]

_DECIMAL = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
# A bare letter means the binary unit, as in `ulimit`, `free -h` and Ollama's memory settings.
_BINARY = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_BINARY |= {f"{u}ib": v for u, v in _BINARY.items()}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    match = _NUMBER.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a {what}")
    return float(match.group(1)), match.group(2).lower()


def parse_bytes(value: str | int | float) -> int:
    """A byte size: an int, or text such as `512`, `4.7GB` (decimal), `8G` or `8GiB` (binary)."""
    if isinstance(value, bool):
        raise ValueError("a byte size cannot be true or false")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        number, unit = _split(value, "byte size (examples: 512MB, 4.7GB, 8GiB)")
    scale = _DECIMAL.get(unit) or _BINARY.get(unit)
    if scale is None:
        raise ValueError(f"unknown size unit {unit!r} (use B, KB, MB, GB, TB, or K, M, G, GiB)")
    if number < 0:
        raise ValueError("a byte size cannot be negative")
    return round(number * scale)


def parse_duration(value: str | int | float) -> float:
    """Seconds, or `30s`, `5m`, `1h`; a negative number means forever (Ollama's keep_alive)."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be true or false")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), "")
        try:
            seconds = float(text[: len(text) - len(unit)]) * scale.get(unit, 1)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration: give seconds, or 30s, 5m, 1h (-1: forever)"
            ) from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("a duration must be a finite number")
    return -1.0 if seconds < 0 else seconds


def parse_field(parse: Callable[[Any], T], value: Any, field: str) -> T:
    """`parse(value)`; a bad value is an InvalidRequest that names the field."""
    from modelctl.record.errors import InvalidRequest

    try:
        return parse(value)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}") from None


def format_bytes(size: int | None) -> str:
    """Decimal units, as model hubs print download sizes."""
    if size is None:
        return "-"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _parse_scaled(value: str | int, scales: dict[str, int], what: str, examples: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"a {what} cannot be true or false")
    if isinstance(value, int):
        return value
    number, unit = _split(value, f"{what} (examples: {examples})")
    if unit not in scales:
        names = ", ".join(u.upper() if u != "k" else u for u in scales if u)
        raise ValueError(f"unknown {what} unit {unit!r} (use {names})")
    return round(number * scales[unit])


def format_memory(size: int | None) -> str:
    """Binary units, as memory is counted (`free -h`, GPU tools): `8.0 GiB`, `512.0 MiB`."""
    if size is None:
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def parse_count(value: str | int) -> int:
    """A token count as context lengths are written: `8192`, `8k` (8192), `128K`, `1M`."""
    return _parse_scaled(value, {"": 1, "k": 1024, "m": 1024**2}, "count", "8192, 8k, 128k")


def parse_parameters(value: str | int) -> int:
    """A parameter count: `494032768`, `0.5B`, `135M`, `8B`, `1.5T`."""
    scales = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
    return _parse_scaled(value, scales, "parameter count", "135M, 0.5B, 8B")


def format_parameters(count: int | None) -> str:
    """`8B`, `1.5B`, `494M`: the way model names write it."""
    if count is None:
        return "-"
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale:
            value = count / scale
            return (f"{value:.1f}".removesuffix(".0") if value < 100 else str(round(value))) + unit
    return str(count)
