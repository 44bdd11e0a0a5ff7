"""Anthropic: the models API (`/v1/models`), with ANTHROPIC_API_KEY."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl.backends import BackendError, BackendStatus
from modelctl.backends._http import HttpBackend

if TYPE_CHECKING:
    from modelctl.model import Model

API_VERSION = "2023-06-01"


class AnthropicBackend(HttpBackend):
    name = "anthropic"
    url_setting = "anthropic_base_url"
    local = False

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.settings.anthropic_api_key:
            headers["x-api-key"] = self.settings.anthropic_api_key
        return headers

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
