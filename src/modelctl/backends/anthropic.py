"""Anthropic: the models API (`/v1/models`), with ANTHROPIC_API_KEY."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl.backends import Backend, BackendError, BackendStatus

if TYPE_CHECKING:
    from modelctl.model import Model

API_VERSION = "2023-06-01"


class AnthropicBackend(Backend):
    name = "anthropic"
    requires = ("httpx",)
    install_hint = "pip install httpx"
    local = False

    def __init__(self, settings: Any, *, instance: str | None = None) -> None:
        super().__init__(settings, instance=instance)
        self.url = settings.anthropic_base_url
        self._http: Any = None

    @property
    def http(self) -> Any:
        if self._http is None:
            from modelctl.backends._http import Http

            headers = {"anthropic-version": API_VERSION}
            if self.settings.anthropic_api_key:
                headers["x-api-key"] = self.settings.anthropic_api_key
            self._http = Http(
                self.name, self.url, headers=headers, timeout=self.settings.http_timeout
            )
        return self._http

    def _list(self) -> list[dict[str, Any]]:
        if not self.settings.anthropic_api_key:
            raise BackendError("anthropic needs an API key", hint="set ANTHROPIC_API_KEY")
        models, after = [], None
        while True:  # the list is paged: has_more and last_id
            page = self.http.get("/v1/models?limit=100" + (f"&after_id={after}" if after else ""))
            models += page.get("data") or []
            if not page.get("has_more"):
                return models
            after = page.get("last_id")

    def status(self) -> BackendStatus:
        try:
            count = len(self._list())
        except BackendError as exc:
            return BackendStatus(self.name, False, url=self.url, error=exc.message, hint=exc.hint)
        return BackendStatus(self.name, True, url=self.url, models=count)

    def discover(self) -> list[Model]:
        from modelctl.model import Model

        return [
            Model.from_dict(
                {
                    "id": f"anthropic/{entry['id']}",
                    "name": entry.get("display_name"),
                    "backend": self.name,
                    "refs": {self.name: entry["id"]},
                    "tasks": ["chat", "code", "vision"],
                    "capabilities": ["chat", "streaming", "tools", "vision"],
                    "installed": True,
                },
                context=f"anthropic model {entry.get('id')!r}",
            )
            for entry in self._list()
        ]
