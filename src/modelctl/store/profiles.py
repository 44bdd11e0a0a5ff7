"""Measured profiles: one row per `profile()` run, the newest per model read back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelctl.store.database import Store

__all__ = ["latest", "save"]


def save(store: Store, result: dict[str, Any]) -> None:
    """Keep one profile (its `model` and `at` are indexed; the rest is JSON)."""
    with store.transaction() as db:
        db.execute(
            "INSERT INTO profiles (model, at, data) VALUES (?, ?, ?)",
            (result["model"], result["at"], json.dumps(result)),
        )


def latest(store: Store, models: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The newest profile of each model (or of the given ones)."""
    rows = store.db.execute(
        "SELECT model, data FROM profiles p WHERE at = "
        "(SELECT MAX(at) FROM profiles q WHERE q.model = p.model)"
    ).fetchall()
    found = {model: json.loads(data) for model, data in rows}
    return {m: found[m] for m in models if m in found} if models is not None else found
