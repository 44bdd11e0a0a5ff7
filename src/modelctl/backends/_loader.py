"""Finding backends: the `modelctl.backends` entry points, built-in ones included."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from modelctl.backends import Backend, BackendError, BackendKind, BackendStatus, kind_of

if TYPE_CHECKING:
    from modelctl.config import Settings
    from modelctl.record.model import Model

GROUP = "modelctl.backends"


class Unavailable(Backend):
    """A backend that cannot load: its status says why and how to fix it."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        error: str,
        hint: str | None,
        cls: type[Backend] | None = None,
    ) -> None:
        super().__init__(settings, instance=name)
        self._error, self._hint, self._cls = error, hint, cls

    name = "unavailable"

    def kind(self) -> BackendKind:
        """What the backend would be (its class's declarations, when the class loaded: its
        models stay local or remote), though it can do nothing until it is fixed."""
        if self._cls is not None:
            return kind_of(self._cls, self.instance)
        nothing = {"local": False, "can_install": False, "can_delete": False, "can_load": False}
        return BackendKind(
            name=self.instance, **nothing, has_server=False, runtimes=(),
            prefixes=(self.instance,), providers=(), forms=(), catalog_key=self.instance,
            model_format=None, install_rank=100,
        )  # fmt: skip

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendError(
            f"backend {self.instance} is unavailable: {self._error}", hint=self._hint
        )

    install = plan_delete = load = _refuse  # each says why, not "cannot install"

    def status(self) -> BackendStatus:
        return BackendStatus(self.instance, False, error=self._error, hint=self._hint)

    def discover(self) -> list[Model]:
        return self._refuse()


def entry_points(group: str = GROUP) -> dict[str, Any]:
    """The entry points of a group (backends by default; connectors too), by name."""
    from importlib.metadata import entry_points as found

    return {ep.name: ep for ep in found(group=group)}


def load_backends(settings: Settings, names: list[str] | None = None) -> dict[str, Backend]:
    """Every registered backend's instances, by instance name; failures become Unavailable."""
    points = entry_points()
    out: dict[str, Backend] = {}
    for name in sorted(points):
        if names is not None and name not in names:
            continue
        try:
            cls: type[Backend] = points[name].load()
        except Exception as exc:
            out[name] = Unavailable(settings, name, f"cannot load: {exc}", None)
            continue
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            out[name] = Unavailable(
                settings, name, f"needs {', '.join(missing)}", cls.install_hint, cls
            )
            continue
        for backend in cls.instances(settings):
            out[backend.instance] = backend
    return out
