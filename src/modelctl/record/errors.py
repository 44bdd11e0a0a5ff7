"""Every error modelctl raises on purpose, in one hierarchy, all defined here.

    ModelctlError                      base; `hint` says what to do, `exit_code` is the CLI's
    ├── NotFound (KeyError)            a name that names nothing: a group, an alias, a key
    │   ├── ModelNotFound              a reference that names no model; carries close matches
    │   └── NotInstalled               a local model whose files are not here (deleted, not pulled)
    ├── InvalidReference (ValueError)  a model reference that parses to nothing
    ├── InvalidModel (ValueError)      a record that fails validation; names the field
    ├── InvalidQuery (ValueError)      a query or a --where expression that cannot be compiled
    ├── InvalidRequest (ValueError)    a request a model cannot take: an unknown option, say
    ├── Conflict                       an alias, id or group that clashes with what exists
    ├── ImportFailed                   an import file rejected as a whole; names record and field
    ├── ConfigError                    a settings file or value that cannot be used
    ├── InvalidCatalog                 a catalog file that cannot be used; names file and entry
    ├── InvalidGGUF                    a file that is not a readable GGUF model
    ├── FitError                       a model whose memory cannot be estimated, or bad fit input
    ├── InsufficientMemory             a model that will not fit where it is going
    ├── Busy                           a model whose request queue is full: try again later
    ├── BackendError                   a backend refused, failed or could not be reached
    │   ├── NotSupported               the backend does not do this (delete an API's model)
    │   ├── UnsafePath                 a path that leads outside the backend's own store
    │   ├── PartialDelete              a delete that stopped half-way; names what is left
    │   └── WorkerFailed               a model's worker process exited under a request
    ├── LoadFailed                     a model that could not be loaded; the scheduler keeps why
    ├── Cancelled                      an install asked to stop; a load nobody waits for
    ├── MissingPackage                 a connector whose framework is not installed
    ├── ServerUnavailable              no modelctl server answers at the configured URL
    ├── Unauthorized                   a request to the server without its API key
    ├── ClientGone                     a request whose client went away before its answer
    └── StoreError                     the database cannot be opened or written
        └── SchemaTooNew               the database was written by a newer modelctl

A user's mistake is one of these and prints as one line; anything else is a bug.
"""

from __future__ import annotations

import re

__all__ = [
    "BackendError",
    "Busy",
    "Cancelled",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "FitError",
    "ImportFailed",
    "InsufficientMemory",
    "InvalidCatalog",
    "InvalidGGUF",
    "InvalidModel",
    "InvalidQuery",
    "InvalidReference",
    "InvalidRequest",
    "LoadFailed",
    "MissingPackage",
    "ModelNotFound",
    "ModelctlError",
    "NotFound",
    "NotInstalled",
    "NotSupported",
    "PartialDelete",
    "SchemaTooNew",
    "ServerUnavailable",
    "StoreError",
    "Unauthorized",
    "UnsafePath",
    "WorkerFailed",
]


_LONG = re.compile(r"\S{241,}")  # a name or path of more than 240 characters, in a message


def _shorten(text: str) -> str:
    """`text` with each very long name cut to its ends: a name of 10,000 characters echoed
    whole would bury the message (and fill a terminal)."""
    return _LONG.sub(lambda m: f"{m[0][:100]}…({len(m[0]) - 200:,} more)…{m[0][-100:]}", text)


class ModelctlError(Exception):
    """Base of every error modelctl raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = _shorten(message)
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is None else _shorten(hint)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class NotFound(ModelctlError, KeyError):
    """A name that names nothing."""

    exit_code = 3

    __str__ = ModelctlError.__str__  # KeyError would print the repr of the message


class ModelNotFound(NotFound):
    """No model, alias or reference matches the name."""

    def __init__(self, ref: str, *, suggestions: list[str] | tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.suggestions = list(suggestions)
        if self.suggestions:
            hint = "did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        else:
            hint = "see `modelctl list` for the models in the registry"
        super().__init__(f"no model named {ref!r}", hint=hint)


class NotInstalled(NotFound):
    """A local model whose files are not here: never pulled, or deleted (maybe by another
    process); a request is refused in words instead of failing to load."""


class InvalidReference(ModelctlError, ValueError):
    """A model reference that parses to nothing."""

    exit_code = 2


class InvalidModel(ModelctlError, ValueError):
    """A model record that fails validation."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.field = field


class InvalidQuery(ModelctlError, ValueError):
    """A query or --where expression that cannot be compiled."""

    exit_code = 2


class InvalidRequest(ModelctlError, ValueError):
    """A request a model cannot take: an unknown option, a malformed message."""

    exit_code = 2


class Conflict(ModelctlError):
    """An alias, id or group name that clashes with one that exists."""

    exit_code = 4


class ImportFailed(ModelctlError):
    """An import rejected as a whole; nothing was written."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        record: int | None = None,
        model_id: str | None = None,
        field: str | None = None,
        hint: str | None = "nothing was imported; fix the file and import again",
    ) -> None:
        super().__init__(message, hint=hint)
        self.record = record
        self.model_id = model_id
        self.field = field


class ConfigError(ModelctlError):
    """A settings file or value that cannot be used."""

    exit_code = 2


class InsufficientMemory(ModelctlError):
    """A model that will not fit in the memory it would have."""

    exit_code = 7


class Busy(ModelctlError):
    """A model whose request queue is full, or a wait for it that ran out: `retry_after`
    seconds is when to try again."""

    exit_code = 6

    def __init__(self, message: str, *, hint: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class InvalidCatalog(ModelctlError):
    """A catalog file that cannot be used; names the file and the entry."""

    exit_code = 2


class InvalidGGUF(ModelctlError):
    """A file that is not a readable GGUF model."""

    exit_code = 2


class FitError(ModelctlError):
    """A model modelctl cannot estimate, or bad fit input."""

    exit_code = 2


class BackendError(ModelctlError):
    """A backend refused, failed, or could not be reached; says which and what to check."""

    exit_code = 6


class NotSupported(BackendError):
    """The backend does not do this (deleting an API provider's model, say)."""

    exit_code = 2


class UnsafePath(BackendError):
    """A path that leads outside the backend's own store."""

    exit_code = 2


class PartialDelete(BackendError):
    """A delete that removed some of a model's files and not others: `left` names the rest."""

    def __init__(self, message: str, *, left: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.left = left


class WorkerFailed(BackendError):
    """A model's worker process exited (crashed, or was killed) under a request: the request
    ends, the model is marked failed with the exit status, and the next request reloads it."""


class LoadFailed(ModelctlError):
    """A model that could not be loaded; the scheduler keeps its reason."""

    exit_code = 6


class Cancelled(ModelctlError):
    """An install job that was asked to stop, or a load that nobody waits for any more."""


class MissingPackage(ModelctlError):
    """A connector whose framework is not installed."""

    exit_code = 2


class ServerUnavailable(ModelctlError):
    """No modelctl server answers at the configured URL."""

    exit_code = 6


class ClientGone(ModelctlError):
    """A request whose client went away before its answer: what it held is given back."""


class Unauthorized(ModelctlError):
    """A request without the server's API key."""


class StoreError(ModelctlError):
    """The registry database cannot be opened or written."""

    exit_code = 5


class SchemaTooNew(StoreError):
    """The database was written by a newer modelctl than this one."""
