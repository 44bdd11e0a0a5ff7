"""A small publish/subscribe bus: `manager.events.on("model-loaded", fn)`.

Events: model-loading, model-loaded, model-failed, model-unloading, model-unloaded,
model-evicted, model-switched. A handler that raises is logged, never breaks the emitter.
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
        self._handlers: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        self.recent: deque[Event] = deque(maxlen=history)

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        with self._lock:
            self._handlers.setdefault(name, []).append(handler)
        return lambda: self.off(name, handler)

    def off(self, name: str, handler: Handler) -> None:
        with self._lock:
            handlers = self._handlers.get(name, [])
            if handler in handlers:
                handlers.remove(handler)

    def emit(self, name: str, **data: Any) -> Event:
        event = Event(name, data)
        with self._lock:
            self.recent.append(event)
            handlers = [*self._handlers.get(name, ()), *self._handlers.get("*", ())]
        for handler in handlers:
            try:
                handler(event)
            except Exception:  # a subscriber's bug must not break a load or an unload
                log.exception("event handler for %s failed", name)
        return event
