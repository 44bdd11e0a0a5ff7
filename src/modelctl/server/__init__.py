"""`modelctl serve`: every model behind one HTTP server.

    /api/v1/*   the management API: every operation of the library (errors: {"error": {code, …}})
    /v1/*       OpenAI-compatible: chat/completions, completions, embeddings, models
    /api/*      Ollama-compatible: tags, show, chat, generate, embed, ps, pull, delete, version
    /metrics    Prometheus

A request names a model; the scheduler loads it if needed, within the memory budget. Every
request is recorded in the usage ledger. Loopback by default; any other address needs an API key.
FastAPI and uvicorn load only here, never on `import modelctl`.
"""

from modelctl.server.app import check_bind, create_app, serve
from modelctl.server.state import ServerState

__all__ = ["ServerState", "check_bind", "create_app", "serve"]
