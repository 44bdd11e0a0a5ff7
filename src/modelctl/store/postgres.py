"""The registry database on PostgreSQL (psycopg 3), for a team: the same tables, records and
guarantees as the SQLite store, shared by many processes and machines.

    MODELCTL_DATABASE=postgresql://user@host:5432/modelctl

- `models.data` keeps each record's JSON text as written (what reads return, byte for byte);
  `doc` is the same as JSONB, and the indexed columns (`backend`, `parameters`, …) are generated
  from it, so they can never disagree with the record.
- Every write is one transaction that first takes one advisory lock: writers take turns, as
  SQLite's `BEGIN IMMEDIATE` makes them, so a read-modify-write (a tag added to a record) in a
  transaction cannot lose another process's write. Readers never wait.
- The schema's version is kept in `modelctl_schema`; migrations run on open, under the same
  lock; a database from a newer modelctl is refused.
- The SQL of the store's callers (the ledger, profiles) is written with `?` placeholders, as
  SQLite takes them: `Connection` turns them into psycopg's.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from modelctl.record.errors import Conflict, SchemaTooNew, StoreError
from modelctl.store.schema import FACETS, INDEXED_COLUMNS, USAGE_DAILY
from modelctl.store.tables import Tables

__all__ = ["COLUMNS", "SCHEMES", "Connection", "Notifier", "PostgresStore", "is_url"]

SCHEMES = ("postgresql", "postgres")
LOCK = 0x6D6F64656C63746C
BULK = (
    100  # records in one write from which they go by COPY  # "modelctl": the writers' advisory lock
)


def _column(path: str, kind: str) -> str:
    """An indexed field out of the record's JSONB: `$.parameters` → `((doc ->> 'parameters')
    ::bigint)`; true and false as 1 and 0, as SQLite stores them. Read once per record (the
    JSON is parsed once, into `doc`), and indexed by the same expression the queries use."""
    value = f"(doc ->> '{path.removeprefix('$.')}')"
    if path == "$.installed":
        return f"(CASE {value} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
    return f"({value}::bigint)" if kind == "INTEGER" else value


# the SQLite store's indexed columns, as expressions: the query language's PostgreSQL dialect
# reads these, and the indexes are made on the same
COLUMNS = {name: _column(path, kind) for name, path, kind in INDEXED_COLUMNS}


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.split("://", 1)[0].lower() in SCHEMES


def shown(url: str) -> str:
    """The URL without its password (in the address or as `?password=`), for messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    query = re.sub(r"(?i)(^|&)(password|sslpassword)=[^&]*", r"\1\2=***", parts.query)
    return urlunsplit(parts._replace(query=query))


_PLACEHOLDER = re.compile(r"%|\?")


def _sql(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (and a literal `%` kept as one)."""
    return _PLACEHOLDER.sub(lambda m: "%%" if m.group() == "%" else "%s", sql)


class Connection:
    """A psycopg connection that takes SQL written for the SQLite store (`?` placeholders),
    and outlives a server that restarts: a statement outside a transaction that finds the
    connection lost runs again on a new one; inside one, or when the server is still away, it
    is a StoreError (a 503 from the API) that says so."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.raw = store._connect()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self._run(lambda: self.raw.execute(_sql(sql), list(params)))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        rows = [list(r) for r in rows]

        def run() -> Any:
            cursor = self.raw.cursor()
            cursor.executemany(_sql(sql), rows)
            return cursor

        return self._run(run)

    def _run(self, statement: Any) -> Any:
        import psycopg

        try:
            return statement()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if not self.lost():
                raise
            if self.store._local.depth:  # a transaction's statements cannot be run again alone
                raise self.store._unreachable(exc) from None
        self.raw = self.store._connect()  # the server came back (or this says it did not)
        try:
            return statement()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self.lost():
                raise self.store._unreachable(exc) from None
            raise

    def lost(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def insert(self, table: str, columns: Iterable[str], rows: list[Iterable[Any]]) -> None:
        """Many rows at once, by COPY (30x the rows a second of one INSERT each)."""
        names = ", ".join(columns)

        def run() -> None:
            with self.raw.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

        self._run(run)

    def close(self) -> None:
        self.raw.close()


def _schema_v1(db: Connection) -> None:
    """Every table of the SQLite store's schema versions 1 to 4, in one step."""
    db.execute(
        """CREATE TABLE models (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  data TEXT NOT NULL,
  doc JSONB GENERATED ALWAYS AS (data::jsonb) STORED)"""
    )
    for name, expression in COLUMNS.items():  # what the query language reads, indexed
        db.execute(f"CREATE INDEX models_{name} ON models (({expression}))")
    db.execute(
        """CREATE TABLE facets (
  facet TEXT NOT NULL, value TEXT NOT NULL,
  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  PRIMARY KEY (facet, value, model_id))"""
    )
    db.execute("CREATE INDEX facets_model ON facets(model_id)")
    db.execute("CREATE UNIQUE INDEX facets_alias ON facets(value) WHERE facet = 'alias'")
    db.execute(
        "CREATE TABLE groups (name TEXT PRIMARY KEY NOT NULL, description TEXT, "
        "created_at TEXT NOT NULL)"
    )
    db.execute(
        """CREATE TABLE group_members (
  group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE ON UPDATE CASCADE,
  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE ON UPDATE CASCADE,
  PRIMARY KEY (group_name, model_id))"""
    )
    db.execute("CREATE INDEX group_members_model ON group_members(model_id)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT)")
    db.execute(
        """CREATE TABLE usage (
  id BIGSERIAL PRIMARY KEY,
  at DOUBLE PRECISION NOT NULL,
  model TEXT NOT NULL,
  backend TEXT,
  kind TEXT NOT NULL,
  client TEXT,
  latency DOUBLE PRECISION NOT NULL,
  ttft DOUBLE PRECISION,
  tokens_in BIGINT NOT NULL DEFAULT 0,
  tokens_out BIGINT NOT NULL DEFAULT 0,
  tokens_per_second DOUBLE PRECISION,
  ok INTEGER NOT NULL,
  error TEXT,
  cost DOUBLE PRECISION NOT NULL DEFAULT 0)"""
    )
    db.execute("CREATE INDEX usage_model_at ON usage(model, at)")
    db.execute("CREATE INDEX usage_at ON usage(at)")
    db.execute(
        "CREATE TABLE profiles (id BIGSERIAL PRIMARY KEY, model TEXT NOT NULL, "
        "at DOUBLE PRECISION NOT NULL, data TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX profiles_model_at ON profiles(model, at)")
    db.execute("CREATE TABLE changes (n BIGINT NOT NULL)")
    db.execute("INSERT INTO changes (n) VALUES (0)")


def _schema_v2(db: Connection) -> None:
    """Daily usage totals (the ledger's history past its retention)."""
    db.execute(USAGE_DAILY.format(real="DOUBLE PRECISION", int="BIGINT"))


MIGRATIONS = {1: _schema_v1, 2: _schema_v2}
CHANNEL = "modelctl_events"


class Notifier:
    """Events between the processes that share a database (LISTEN/NOTIFY): `publish(message)`
    sends one to every other process, and each message they send reaches `receive` here.

    Two threads, each with a connection of its own and an owner that stops them (`close`):
    one sends what `publish` queued (publish never waits: the scheduler's loop calls it), one
    listens. A lost connection is made again, with a pause that grows to 5 s; what is sent
    while the server is away is dropped (events say what is happening now, not a history).
    """

    def __init__(self, url: str, receive: Any, *, origin: str) -> None:
        import queue

        self.url, self.receive, self.origin = url, receive, origin
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, name="modelctl-notify", daemon=True),
            threading.Thread(target=self._listen, name="modelctl-listen", daemon=True),
        ]
        self.listening = threading.Event()  # set once LISTEN is in place (tests wait on it)
        for thread in self._threads:
            thread.start()

    def publish(self, message: dict[str, Any]) -> None:
        text = json.dumps({"origin": self.origin, **message}, default=str)
        if len(text.encode()) < 7900:  # NOTIFY's payload ends at 8000 bytes
            self._queue.put(text)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                               application_name="modelctl-events")  # fmt: skip

    def _pause(self, tries: int) -> None:
        self._stop.wait(min(5.0, 0.2 * 2**tries))

    def _send(self) -> None:
        db, tries = None, 0
        while not self._stop.is_set():
            text = self._queue.get()
            if text is None:
                break
            try:
                db = db or self._connect()
                db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text))
                tries = 0
            except Exception:  # the server is away: this event is dropped
                if db is not None:
                    db.close()
                db, tries = None, tries + 1
                self._pause(tries)
        if db is not None:
            db.close()

    def _listen(self) -> None:
        tries = 0
        while not self._stop.is_set():
            try:
                with self._connect() as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    tries = 0
                    while not self._stop.is_set():
                        for note in db.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except Exception:
                self.listening.clear()
                tries += 1
                self._pause(tries)

    def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("origin") != self.origin:
            self.receive(message)


class PostgresStore(Tables):
    """`PostgresStore(url)` connects (creating and migrating the tables) to a PostgreSQL
    database; the same interface as the SQLite `Store`."""

    dialect = "postgresql"

    def __init__(
        self, url: str, *, migrations: dict[int, Any] | None = None, timeout: float = 30.0
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StoreError(
                "a PostgreSQL database needs psycopg", hint="pip install 'modelctl[postgres]'"
            ) from None
        self.url = url
        self.path = shown(url)  # what messages name
        self.timeout = timeout
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._local = threading.local()
        self._commits = 0
        self._migrate()

    # ------------------------------------------------------------------ connections

    @property
    def db(self) -> Connection:
        """This thread's connection (autocommit: reads see every commit at once; writes go
        through `transaction`)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = Connection(self)
            self._local.db = db
            self._local.depth = 0
        return db

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.timeout)),
                application_name="modelctl", options="-c TimeZone=UTC",
            )  # fmt: skip
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> StoreError:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        error = StoreError(
            f"cannot reach the database {self.path}: {reason}",
            hint="is PostgreSQL running there, and is MODELCTL_DATABASE right?",
        )
        error.unreachable = True  # (not a refused write: what is waiting may be tried again)
        return error

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, writers in turn (an advisory lock); a nested call is a
        savepoint inside it. An exception rolls back what its block wrote, and only that."""
        import psycopg

        db = self.db
        depth = self._local.depth
        if depth:
            savepoint = f"sp{depth}"
            db.execute(f"SAVEPOINT {savepoint}")
            self._local.depth += 1
            try:
                yield db
            except BaseException:
                db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                db.execute(f"RELEASE SAVEPOINT {savepoint}")
                raise
            else:
                db.execute(f"RELEASE SAVEPOINT {savepoint}")
            finally:
                self._local.depth = depth
            return
        db.execute("BEGIN")  # (a lost connection is made again here, before the transaction)
        self._local.depth = 1  # from here a lost connection is an error, never a retry alone
        try:
            db.execute(f"SET LOCAL lock_timeout = '{int(self.timeout * 1000)}ms'")
            db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK,))
        except BaseException as exc:
            self._local.depth = 0
            self._abandon(db)
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"the database {self.path} is busy: {exc}") from None
            raise
        try:
            yield db
            if self._changes_table:
                db.execute("UPDATE changes SET n = n + 1")
        except BaseException as exc:
            self._abandon(db)
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                raise self._unreachable(exc) from None
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise Conflict(f"that would make a duplicate: {exc.diag.message_detail}") from None
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"could not write the database {self.path}: {exc}") from None
            raise
        else:
            try:
                db.execute("COMMIT")
            except psycopg.Error as exc:
                self._abandon(db)
                raise StoreError(f"could not write the database {self.path}: {exc}") from None
            self._commits += 1
        finally:
            self._local.depth = 0

    _changes_table = True

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """Reads from one snapshot (REPEATABLE READ): what another process commits meanwhile
        (the ledger's fold of old rows) is seen by all of them or by none."""
        db = self.db
        if self._local.depth:
            yield db
            return
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._local.depth = 1
        try:
            yield db
        finally:
            self._local.depth = 0
            self._abandon(db)  # (a rollback: nothing was written)

    def _abandon(self, db: Connection) -> None:
        """Roll back; a connection that cannot is dropped (the next use makes a new one)."""
        try:
            if not db.lost():
                db.raw.execute("ROLLBACK")
        except Exception:
            db.close()
        if db.lost():
            self._local.db = None

    def _migrate(self) -> None:
        target = max(self._migrations)
        self._changes_table = False  # not there before the first step makes it
        try:
            with self.transaction() as db:
                db.execute("CREATE TABLE IF NOT EXISTS modelctl_schema (version INTEGER NOT NULL)")
                row = db.execute("SELECT version FROM modelctl_schema").fetchone()
                version = row[0] if row else 0
                if version > target:
                    raise SchemaTooNew(
                        f"{self.path} has schema version {version}; this modelctl knows up to "
                        f"{target}",
                        hint="upgrade modelctl (pip install -U modelctl)",
                    )
                for step in range(version + 1, target + 1):
                    self._migrations[step](db)
                db.execute("DELETE FROM modelctl_schema")
                db.execute("INSERT INTO modelctl_schema (version) VALUES (?)", (target,))
        finally:
            self._changes_table = True

    def notifier(self, receive: Any, *, origin: str) -> Notifier:
        """Events shared with every process on this database (see `Notifier`)."""
        return Notifier(self.url, receive, origin=origin)

    def stamp(self) -> tuple[int, int]:
        """Changes when anything is written, by any process on any machine."""
        return self.db.execute("SELECT n FROM changes").fetchone()[0], self._commits

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT version FROM modelctl_schema").fetchone()[0]

    def describe(self) -> dict[str, Any]:
        """For the doctor: the engine and its version, where, and the schema's version."""
        version = self.db.execute("SHOW server_version").fetchone()[0]
        return {"engine": f"PostgreSQL {version.split()[0]}", "where": self.path,
                "schema": self.schema_version, "latest": max(self._migrations)}  # fmt: skip

    # ------------------------------------------------------------------ records

    def find_ids_nocase(self, name: str) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM models WHERE lower(id) = lower(?) UNION SELECT model_id FROM facets "
            "WHERE facet = 'alias' AND lower(value) = lower(?)",
            (name, name),
        )
        return [r[0] for r in rows]

    def find_by_ref(self, backend: str | None, name: str) -> list[str]:
        if backend is None:
            sql = (
                "SELECT id FROM models WHERE EXISTS (SELECT 1 FROM jsonb_each_text(doc -> 'refs') "
                "r WHERE r.value = ?) ORDER BY id"
            )
            rows = self.db.execute(sql, (name,))
        else:
            rows = self.db.execute(
                "SELECT id FROM models WHERE doc -> 'refs' ->> ? = ? ORDER BY id", (backend, name)
            )
        return [r[0] for r in rows]

    def find_by_location(self, location: str) -> list[str]:
        rows = self.db.execute("SELECT id FROM models WHERE doc ->> 'location' = ?", (location,))
        return [r[0] for r in rows]

    def put_many(self, records: Iterable[dict[str, Any]]) -> int:
        """Insert or replace records and their facets: three statements for the whole batch
        (psycopg sends the rows of each in one pipeline), in one transaction."""
        import psycopg

        given = list(records)
        records = list({r["id"]: r for r in given}.values())  # the last of an id wins
        if not records:
            return 0
        rows = [
            (r["id"], json.dumps(r, separators=(",", ":"), ensure_ascii=False)) for r in records
        ]
        facets = [
            (facet, value, record["id"])
            for record in records
            for facet, field in FACETS.items()
            for value in record.get(field) or ()
        ]
        many = len(rows) >= BULK
        with self.transaction() as db:
            if many:  # by COPY into a table of this transaction's, then one upsert
                db.execute("CREATE TEMPORARY TABLE incoming (id TEXT, data TEXT) ON COMMIT DROP")
                db.insert("incoming", ("id", "data"), rows)
                db.execute(
                    "INSERT INTO models (id, data) SELECT id, data FROM incoming "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
                )
                db.execute("DROP TABLE incoming")  # (a savepoint's: the next write makes its own)
            else:
                db.executemany(
                    "INSERT INTO models (id, data) VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    rows,
                )
            db.execute("DELETE FROM facets WHERE model_id = ANY(?)", ([r[0] for r in rows],))
            if facets:
                try:
                    with self.transaction():  # a savepoint: the conflict is named below
                        if many:
                            db.insert("facets", ("facet", "value", "model_id"), facets)
                        else:
                            db.executemany(
                                "INSERT INTO facets (facet, value, model_id) VALUES (?, ?, ?)",
                                facets,
                            )
                except (psycopg.errors.UniqueViolation, Conflict):
                    raise self._alias_conflict(facets) from None
        return len(given)

    def _alias_conflict(self, facets: list[tuple[str, str, str]]) -> Conflict:
        """Which alias of a batch is taken: by another model, or twice in the batch."""
        seen: dict[str, str] = {}
        for facet, value, model_id in facets:
            if facet != "alias":
                continue
            owner = self.resolve_alias(value) or seen.get(value)
            if owner is not None and owner != model_id:
                return Conflict(
                    f"alias {value!r} already names model {owner!r}",
                    hint="remove it there first: modelctl alias --rm NAME",
                )
            seen[value] = model_id
        return Conflict("an alias of these models already names another model")

    def _select(
        self, what: str, where: str, params: Iterable[Any], order: str, limit: int | None,
        offset: int = 0,
    ) -> Any:  # fmt: skip
        sql = f"SELECT {what} FROM models WHERE {where} ORDER BY {order}"
        args = list(params)
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        if offset:
            sql += " OFFSET ?"
            args.append(offset)
        return self.db.execute(sql, args)
