"""What both engines' stores do with the same SQL: small state, records read by id or alias,
counts and pages of records, groups. Each engine (`database.Store`, SQLite; `postgres.
PostgresStore`) brings its connection (`db`), its `transaction()`, how it pages (`_select`) and
writes records (`put_many`); this mixin holds the rest, written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["Tables"]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Tables:
    """The engine-neutral part of a store (see the module's docstring)."""

    db: Any
    transaction: Any
    _select: Any
    put_many: Any

    def get_state(self, key: str) -> Any:
        """A JSON value kept under `key` in the meta table (what the scheduler had loaded)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_state(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def get(self, model_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM models WHERE id = ?", (model_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_raw(self, model_id: str) -> str | None:
        row = self.db.execute("SELECT data FROM models WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def resolve_alias(self, alias: str) -> str | None:
        row = self.db.execute(
            "SELECT model_id FROM facets WHERE facet = 'alias' AND value = ?", (alias,)
        ).fetchone()
        return row[0] if row else None

    def aliases(self) -> dict[str, str]:
        """Every alias and the id it names, by alias."""
        rows = self.db.execute(
            "SELECT value, model_id FROM facets WHERE facet = 'alias' ORDER BY value"
        )
        return dict(rows.fetchall())

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace one record and its facets."""
        self.put_many([record])

    def delete(self, model_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM models WHERE id = ?", (model_id,)).rowcount > 0

    def clear(self) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM group_members")
            db.execute("DELETE FROM groups")
            db.execute("DELETE FROM facets")
            db.execute("DELETE FROM models")

    def count(self, where: str = "TRUE", params: Iterable[Any] = ()) -> int:
        return self.db.execute(
            f"SELECT count(*) FROM models WHERE {where}", list(params)
        ).fetchone()[0]

    def ids(
        self,
        where: str = "TRUE",
        params: Iterable[Any] = (),
        *,
        order: str = "id",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[str]:
        return [r[0] for r in self._select("id", where, params, order, limit, offset)]

    def select_raw(
        self,
        where: str = "TRUE",
        params: Iterable[Any] = (),
        *,
        order: str = "id",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[str]:
        """The stored JSON text of the matching records, in order: `limit` of them after the
        first `offset`."""
        return [r[0] for r in self._select("data", where, params, order, limit, offset)]

    def select(
        self, where: str = "TRUE", params: Iterable[Any] = (), **options: Any
    ) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.select_raw(where, params, **options)]

    # ------------------------------------------------------------------ groups

    def groups(self) -> dict[str, dict[str, Any]]:
        """Every group: name → {"description", "created_at", "models"}."""
        out: dict[str, dict[str, Any]] = {}
        for name, description, created in self.db.execute(
            "SELECT name, description, created_at FROM groups ORDER BY name"
        ):
            out[name] = {"description": description, "created_at": created, "models": []}
        for name, model_id in self.db.execute(
            "SELECT group_name, model_id FROM group_members ORDER BY group_name, model_id"
        ):
            out[name]["models"].append(model_id)
        return out

    def groups_of(self, model_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT group_name FROM group_members WHERE model_id = ? ORDER BY group_name",
            (model_id,),
        )
        return [r[0] for r in rows]

    def put_group(
        self,
        name: str,
        *,
        description: str | None = None,
        created_at: str | None = None,
        members: Iterable[str] = (),
    ) -> None:
        """Create a group if needed (keeping its description unless one is given), add members."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO groups (name, description, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET description = "
                "coalesce(excluded.description, groups.description)",
                (name, description, created_at or _now()),
            )
            db.executemany(
                "INSERT INTO group_members (group_name, model_id) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                [(name, m) for m in members],
            )

    def remove_from_group(self, name: str, members: Iterable[str]) -> int:
        with self.transaction() as db:
            return sum(
                db.execute(
                    "DELETE FROM group_members WHERE group_name = ? AND model_id = ?", (name, m)
                ).rowcount
                for m in members
            )

    def delete_group(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM groups WHERE name = ?", (name,)).rowcount > 0
