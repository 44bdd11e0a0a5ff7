"""Export and import through files: atomic writes, clear errors for files that cannot be read."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelctl.record.errors import ImportFailed, ModelctlError
from modelctl.registry import ImportReport, Registry

__all__ = ["export_file", "import_file", "read_json", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    target = Path(path)
    if "\0" in str(path):
        raise ModelctlError(f"cannot write {str(path)!r}: a file name has no NUL bytes")
    if not target.name or os.path.isdir(target):
        raise ModelctlError(f"cannot write {str(path)!r}: it is a folder", hint="name a file")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a name too long, or a file on the way
            temporary.unlink(missing_ok=True)
        raise ModelctlError(f"cannot write {target}: {exc.strerror}") from None
    return target


def read_json(path: str | os.PathLike[str]) -> Any:
    """JSON from a file, or from standard input for `-`."""
    if "\0" in str(path):
        raise ImportFailed(f"no file {str(path)!r}: a file name has no NUL bytes")
    try:
        if str(path) == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ImportFailed(f"no file {str(path)!r}", hint="check the path") from None
    except IsADirectoryError:
        raise ImportFailed(
            f"{str(path)!r} is a folder, not a file", hint="name a JSON file"
        ) from None
    except OSError as exc:
        raise ImportFailed(f"cannot read {str(path)!r}: {exc.strerror}", hint=None) from None
    except UnicodeDecodeError:
        raise ImportFailed(f"{str(path)!r} is not UTF-8 text", hint="name a JSON export") from None
    except json.JSONDecodeError as exc:
        raise ImportFailed(
            f"{str(path)!r} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def export_file(
    registry: Registry, path: str | os.PathLike[str], where: dict[str, Any] | str | None = None
) -> dict[str, Any]:
    data = registry.export_data(where)
    write_json_atomic(path, data)
    return data


def import_file(
    registry: Registry,
    path: str | os.PathLike[str],
    *,
    replace: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    return registry.import_data(read_json(path), replace=replace, dry_run=dry_run)
