"""A small publish/subscribe bus: `manager.events.on("model-loaded", fn)`.

Events: model-loading, model-loaded, model-failed, model-unloading, model-unloaded,
model-evicted, model-switched; and model-changed (`model`, `change`) when the management API
or an install job has changed the registry. A handler that raises is logged, never breaks the
emitter.
Recent events are kept, so a late subscriber (the web page, an SSE stream) can catch up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventBus"]

log = logging.getLogger("modelctl.events")


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.name, "at": self.at, **self.data}


Handler = Callable[[Event], None]


class EventBus:
    """Handlers by event name; `"*"` receives every event."""

    def __init__(self, history: int = 256) -> None:
        # copied on write, read without a lock: the scheduler emits from its event loop, which
        # takes no lock (subscribing is rare, emitting is not)
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        self._changing = threading.Lock()  # subscribers only: `emit` never takes it
        self.recent: deque[Event] = deque(maxlen=history)  # appends are atomic

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        with self._changing:
            self._handlers = {**self._handlers, name: (*self._handlers.get(name, ()), handler)}
        return lambda: self.off(name, handler)

    def off(self, name: str, handler: Handler) -> None:
        with self._changing:
            handlers = list(self._handlers.get(name, ()))
            if handler in handlers:
                handlers.remove(handler)
                self._handlers = {**self._handlers, name: tuple(handlers)}

    def emit(self, name: str, **data: Any) -> Event:
        """Handlers run in the emitter's thread: they must be quick and must not block."""
        event = Event(name, data)
        self.recent.append(event)
        handlers = self._handlers  # one snapshot: a handler added meanwhile waits for the next
        for handler in (*handlers.get(name, ()), *handlers.get("*", ())):
            try:
                handler(event)
            except Exception:  # a subscriber's bug must not break a load or an unload
                log.exception("event handler for %s failed", name)
        return event
