"""`serve`, and the commands that act on the running server, where loaded models live:
`load`, `unload`, `use`, `ps` (as Ollama's CLI acts on its daemon), and `logs`."""

from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt
from modelctl.record.errors import ModelctlError

KeepAliveOpt = Annotated[
    str | None,
    typer.Option(
        "--keep-alive", "-k", help="Idle time before unloading: 30s, 10m, 1h; -1 forever."
    ),
]
ContextOpt = Annotated[int | None, typer.Option("--context", "-c", min=16, help="Context length.")]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("load")(load)
    app.command("unload")(unload)
    app.command("use")(use)
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("ui")(ui)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: the `server` setting).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", min=0, max=65535)] = None,
    no_restore: Annotated[
        bool, typer.Option("--no-restore", help="Do not reload what the last run had loaded.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Serve this one model (loaded at start, pinned)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Serve every model: management API (/api/v1), OpenAI (/v1) and Ollama (/api) APIs.

    Loopback only unless MODELCTL_API_KEY is set; then every request needs that key.
    """
    from modelctl.server import serve as run_server

    manager = _common.state(ctx).manager
    settings = manager.settings
    url = urlsplit(settings.server)
    host = host or url.hostname or "127.0.0.1"
    port = (url.port or 8765) if port is None else port

    def announce(address: str) -> None:
        _common.say(
            f"modelctl serving on {address}  "
            "(dashboard: /, OpenAI: /v1, Anthropic: /v1/messages, Ollama: /api, "
            "management: /api/v1, docs: /docs; Ctrl-C stops)"
        )

    run_server(
        manager, host=host, port=port, api_key=settings.api_key, restore=not no_restore,
        only=model, log_level=log_level, announce=announce,
    )  # fmt: skip
    _common.say("stopped")


def ui(
    ctx: typer.Context,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the dashboard's address; open nothing.")
    ] = False,
) -> None:
    """Open the running server's web dashboard in a browser (start it with `modelctl serve`)."""
    import webbrowser

    client = _client(ctx)
    client.call("GET", "/health")  # no server there: one line that says how to start one
    url = urlsplit(client.url)
    if url.hostname in ("0.0.0.0", "::"):  # bound to every address: this machine's is one
        url = url._replace(netloc=f"127.0.0.1:{url.port or 8765}")
    address = f"{url.geturl().rstrip('/')}/"
    if print_only or not webbrowser.open(address):
        _common.say(address)
    else:
        _common.say(f"opened {address} in a browser")


def _client(ctx: typer.Context) -> Any:
    from modelctl.ops.client import ServerClient

    settings = _common.state(ctx).settings
    return ServerClient(settings.server, api_key=settings.api_key)


def _keep_alive(text: str | None) -> float | None:
    from modelctl.record.units import parse_duration, parse_field

    return None if text is None else parse_field(parse_duration, text, "--keep-alive")


def load(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A registered model (id, alias or reference).")],
    keep_alive: KeepAliveOpt = None,
    pin: Annotated[bool, typer.Option("--pin", help="Never evict it to make room.")] = False,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Higher is evicted later.")
    ] = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a model in the running server (waits until it is ready)."""
    body = {"model": model, "keep_alive": _keep_alive(keep_alive), "pin": pin or None,
            "priority": priority, "context": context}  # fmt: skip
    slot = _client(ctx).call("POST", "/api/v1/loaded", json=_given(body))
    if as_json:
        _common.emit_json(slot)
        return
    from modelctl.record.units import format_memory

    _common.say(
        f"loaded {slot['model']} on {slot['device'] or 'cpu'} ({format_memory(slot['size'])}"
        f"{', pinned' if slot['pinned'] else ''}; {_until(slot)})"
    )


def unload(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="A loaded model.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every loaded model.")] = False,
) -> None:
    """Unload a model (after its requests in flight finish), or all of them."""
    client = _client(ctx)
    if all_:
        gone = client.call("DELETE", "/api/v1/loaded")["unloaded"]
    elif model:
        gone = client.call("DELETE", f"/api/v1/loaded/{client.quote(model)}")["unloaded"]
    else:
        raise ModelctlError("name a model to unload, or pass --all")
    _common.say(f"unloaded {', '.join(gone)}" if gone else "nothing was loaded")


def use(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model to make current.")],
    keep_alive: KeepAliveOpt = None,
    context: ContextOpt = None,
) -> None:
    """Switch: load a model if needed and make it the current one (requests without a model
    name go to it)."""
    body = {"model": model, "keep_alive": _keep_alive(keep_alive), "context": context}
    slot = _client(ctx).call("PUT", "/api/v1/current", json=_given(body))
    _common.say(f"now using {slot['model']}")


def ps(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Loaded models: size, where, until when, requests in flight; memory against budget."""
    data = _client(ctx).call("GET", "/api/v1/loaded")
    if as_json:
        _common.emit_json(data)
        return
    from rich.table import Table

    from modelctl.record.units import format_memory

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MODEL", "STATE", "SIZE", "WHERE", "UNTIL", "IN FLIGHT", "TOK/S"):
        table.add_column(column, no_wrap=True)
    for slot in data["models"]:
        mark = " *" if slot["model"] == data["current"] else ""
        speed = slot.get("tokens_per_second")
        table.add_row(
            slot["model"] + mark + (" (pinned)" if slot["pinned"] else ""),
            slot["state"] if not slot.get("error") else f"failed: {slot['error']}",
            format_memory(slot.get("counted") or slot["size"]),
            (slot.get("device") or "-") + (f" pid {slot['pid']}" if slot.get("pid") else ""),
            _until(slot),
            str(slot["in_flight"]),
            f"{speed:.1f}" if speed else "-",
        )
    console = _common.console()
    if data["models"]:
        console.print(table)
    else:
        _common.say("no models loaded")
    budget = data.get("budget")
    shown = format_memory(budget) if budget is not None else "no limit"
    _common.say(f"memory: {format_memory(data['used'])} of {shown}")


def logs(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model whose worker log to show.")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many lines.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """A model's worker log: what its runtime printed, and each start and exit (with why).
    Read from the server, or from this machine's files when no server answers."""
    from modelctl.record.errors import ServerUnavailable

    client = _client(ctx)
    try:
        data = client.call("GET", f"/api/v1/logs/{client.quote(model)}", params={"lines": lines})
    except ServerUnavailable:
        data = _common.state(ctx).manager.logs(model, lines)
    if as_json:
        _common.emit_json(data)
        return
    for line in data["lines"]:
        typer.echo(line)


def _until(slot: dict[str, Any]) -> str:
    expires = slot.get("expires_in")
    if expires is None:
        return "forever" if slot.get("state") == "loaded" else "-"
    if expires < 90:
        return f"{expires:.0f}s"
    return f"{expires / 60:.0f}m" if expires < 5400 else f"{expires / 3600:.1f}h"


def _given(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
