"""Every error modelctl raises on purpose, in one hierarchy.

    ModelctlError                      base; `hint` says what to do, `exit_code` is the CLI's
    ├── NotFound (KeyError)            a name that names nothing: a group, an alias, a key
    │   └── ModelNotFound              a reference that names no model; carries close matches
    ├── InvalidReference (ValueError)  a model reference that parses to nothing
    ├── InvalidModel (ValueError)      a record that fails validation; names the field
    ├── InvalidQuery (ValueError)      a query or a --where expression that cannot be compiled
    ├── InvalidRequest (ValueError)    a request a model cannot take: an unknown option, say
    ├── Conflict                       an alias, id or group that clashes with what exists
    ├── ImportFailed                   an import file rejected as a whole; names record and field
    ├── ConfigError                    a settings file or value that cannot be used
    ├── InsufficientMemory             a model that will not fit where it is going
    ├── BackendError (backends)        a backend refused, failed or could not be reached
    └── StoreError                     the database cannot be opened or written
        └── SchemaTooNew               the database was written by a newer modelctl

A user's mistake is one of these and prints as one line; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "ImportFailed",
    "InsufficientMemory",
    "InvalidModel",
    "InvalidQuery",
    "InvalidReference",
    "InvalidRequest",
    "ModelNotFound",
    "ModelctlError",
    "NotFound",
    "SchemaTooNew",
    "StoreError",
]


class ModelctlError(Exception):
    """Base of every error modelctl raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

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


class StoreError(ModelctlError):
    """The registry database cannot be opened or written."""

    exit_code = 5


class SchemaTooNew(StoreError):
    """The database was written by a newer modelctl than this one."""
