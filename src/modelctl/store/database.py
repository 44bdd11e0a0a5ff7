"""Persistence under the registry: one SQLite file, shared safely by several processes.

The store speaks JSON-ready records (dicts), never Model objects, so that reading and listing
need no validation library: every record was validated by the registry when it was written.

Layout (schema version in `PRAGMA user_version`, migrated on open):

    models(id, data)              the record as JSON: the single source of truth;
                                  indexed columns (backend, size, …) are generated from `data`
    facets(model_id, facet, value)  list members (tag, task, capability, alias), indexed
    groups(name, …), group_members(group_name, model_id)
    meta(key, value)              small state: what the scheduler had loaded
    usage(at, model, latency, tokens_in, tokens_out, cost, …)  one row per request (v2)
    profiles(model, at, data)     measured speed on this machine (v3)

Concurrency: WAL mode lets readers run beside one writer; every write is one `BEGIN IMMEDIATE`
transaction, so a read-modify-write in a transaction cannot lose another process's write.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelctl.record.errors import Conflict, SchemaTooNew, StoreError
from modelctl.store.postgres import PostgresStore, is_url
from modelctl.store.schema import FACETS, MIGRATIONS, Migration
from modelctl.store.tables import Tables

__all__ = ["Store", "open_store"]


def _casefold(value: Any) -> Any:
    """SQL `casefold(x)`: text in any case as one (the query language's `$contains` on text
    that is not ASCII, which SQLite's own `lower` leaves as it is)."""
    return value.casefold() if isinstance(value, str) else value


def open_store(location: str | os.PathLike[str]) -> Store | PostgresStore:
    """The store at `location`: a `postgresql://` URL (PostgreSQL, for a team), else a SQLite
    file's path."""
    if is_url(location):
        return PostgresStore(str(location))
    return Store(location)


class Store(Tables):
    """A registry database: `Store(path)` opens (creating and migrating) the SQLite file."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        migrations: dict[int, Migration] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._local = threading.local()
        self._commits = 0  # this process's commits: with PRAGMA data_version, a change stamp
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the registry folder {self.path.parent}: {exc}"
            ) from None
        self._migrate()

    # ------------------------------------------------------------------ connections

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared between threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            self._local.depth = 0
        return db

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            db.create_function("casefold", 1, _casefold, deterministic=True)
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: the file system does not support SQLite's WAL mode")
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a registry database ({exc})",
                hint="move it aside, or point MODELCTL_HOME at another folder",
            ) from None
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (`BEGIN IMMEDIATE`); a nested call is a savepoint inside it.

        An exception rolls back what its block wrote, and only that: an outer transaction that
        catches it goes on with its own writes intact.
        """
        db = self.db
        depth = self._local.depth
        if depth:
            savepoint = f"sp{depth}"
            db.execute(f"SAVEPOINT {savepoint}")
            self._local.depth += 1
            try:
                yield db
            except BaseException:
                db.execute(f"ROLLBACK TO {savepoint}")
                db.execute(f"RELEASE {savepoint}")
                raise
            else:
                db.execute(f"RELEASE {savepoint}")
            finally:
                self._local.depth = depth
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the registry {self.path} is busy or read-only: {exc}") from None
        self._local.depth = 1
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                db.execute("ROLLBACK")
                raise StoreError(f"could not write the registry {self.path}: {exc}") from None
            self._commits += 1
        finally:
            self._local.depth = 0

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Reads from one snapshot (a deferred transaction): what another process commits
        meanwhile (the ledger's fold of old rows) is seen by all of them or by none."""
        db = self.db
        if self._local.depth:  # inside a write already: its own view
            yield db
            return
        db.execute("BEGIN")
        self._local.depth = 1
        try:
            yield db
        finally:
            self._local.depth = 0
            db.execute("COMMIT")

    def _migrate(self) -> None:
        target = max(self._migrations)
        with self.transaction() as db:
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path} is not a registry database ({exc})") from None
            if version > target:
                raise SchemaTooNew(
                    f"{self.path} has schema version {version}; this modelctl knows up to {target}",
                    hint="upgrade modelctl (pip install -U modelctl)",
                )
            for step in range(version + 1, target + 1):
                self._migrations[step](db)
                db.execute(f"PRAGMA user_version = {step}")

    def stamp(self) -> tuple[int, int]:
        """Changes when anything is written: by another process or thread (SQLite's
        data_version for this thread's connection) or through this one (commits here)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0], self._commits

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def describe(self) -> dict[str, Any]:
        """For the doctor: the engine and its version, where, and the schema's version."""
        return {"engine": f"SQLite {sqlite3.sqlite_version}", "where": str(self.path),
                "schema": self.schema_version, "latest": max(self._migrations)}  # fmt: skip

    # ------------------------------------------------------------------ records

    def find_ids_nocase(self, name: str) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM models WHERE id = ? COLLATE NOCASE "
            "UNION SELECT model_id FROM facets WHERE facet = 'alias' AND value = ? COLLATE NOCASE",
            (name, name),
        )
        return [r[0] for r in rows]

    def find_by_ref(self, backend: str | None, name: str) -> list[str]:
        """Ids of models a backend knows by `name` (`refs[backend] == name`)."""
        if backend is None:
            sql = "SELECT m.id FROM models m, json_each(m.data, '$.refs') r WHERE r.value = ?"
            rows = self.db.execute(sql, (name,))
        else:
            sql = "SELECT id FROM models WHERE json_extract(data, '$.refs.' || json_quote(?)) = ?"
            rows = self.db.execute(sql, (backend, name))
        return [r[0] for r in rows]

    def find_by_location(self, location: str) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM models WHERE json_extract(data, '$.location') = ?", (location,)
        )
        return [r[0] for r in rows]

    def put_many(self, records: Iterable[dict[str, Any]]) -> int:
        count = 0
        with self.transaction() as db:
            for record in records:
                model_id = record["id"]
                db.execute(
                    "INSERT INTO models (id, data) VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    (model_id, json.dumps(record, separators=(",", ":"), ensure_ascii=False)),
                )
                db.execute("DELETE FROM facets WHERE model_id = ?", (model_id,))
                rows = [
                    (facet, value, model_id)
                    for facet, field in FACETS.items()
                    for value in record.get(field) or ()
                ]
                try:
                    db.executemany(
                        "INSERT INTO facets (facet, value, model_id) VALUES (?, ?, ?)", rows
                    )
                except sqlite3.IntegrityError:
                    taken = [v for f, v, _ in rows if f == "alias" and self.resolve_alias(v)]
                    owner = self.resolve_alias(taken[0]) if taken else None
                    raise Conflict(
                        f"alias {taken[0] if taken else '?'!r} already names model {owner!r}",
                        hint="remove it there first: modelctl alias --rm NAME",
                    ) from None
                count += 1
        return count

    def _select(
        self,
        what: str,
        where: str,
        params: Iterable[Any],
        order: str,
        limit: int | None,
        offset: int = 0,
    ) -> sqlite3.Cursor:
        sql = f"SELECT {what} FROM models WHERE {where} ORDER BY {order}"
        args = list(params)
        if offset:  # SQLite takes an OFFSET only after a LIMIT: -1 is none
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, offset]
        elif limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self.db.execute(sql, args)
