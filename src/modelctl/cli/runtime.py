"""`modelctl run`: talk to a model in this process (it loads here, and unloads on exit);
`modelctl demo`: a tiny model to try it all with, no download needed."""

import sys
from typing import Annotated, Any

import typer

from modelctl.cli import _common


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)


def demo(ctx: typer.Context, as_json: _common.JsonOpt = False) -> None:
    """Write a tiny GGUF model (random weights, under 1 MB) and register it as modelctl-demo,
    to try run, load and serve with no download. Its answers are noise."""
    from modelctl.record.units import format_bytes

    model = _common.state(ctx).manager.make_demo()
    if as_json:
        _common.emit_json(model.to_dict())
        return
    _common.say(
        f"registered {model.id} ({format_bytes(model.file_size)}, {model.location}); "
        f"try: modelctl run {model.id} hello"
    )


def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A registered model.")],
    prompt: Annotated[str | None, typer.Argument(help="Without one: an interactive chat.")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Plain text completion, no chat template.")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", "-n", min=1)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", min=0.0)] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    context: Annotated[
        int | None, typer.Option("--context", min=16, help="Context length to load with.")
    ] = None,
) -> None:
    """Stream a model's answer to PROMPT, or chat with it line by line (Ctrl-D ends)."""
    manager = _common.state(ctx).manager  # closed (models unloaded) when the command ends
    given = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "context": context}
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if prompt is not None:
        _answer(manager, model, [{"role": "user", "content": prompt}], raw, options)
        return
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write(">>> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        reply = _answer(manager, model, history, raw, options)
        history.append({"role": "assistant", "content": reply})


def _answer(
    manager: Any, model: str, messages: list[dict[str, str]], raw: bool, options: dict[str, Any]
) -> str:
    parts: list[str] = []
    if raw:
        stream = manager.complete(messages[-1]["content"], model, stream=True, **options)
        pieces = (c["choices"][0].get("text") or "" for c in stream)
    else:
        stream = manager.chat(messages, model, stream=True, **options)
        pieces = ((c["choices"][0].get("delta") or {}).get("content") or "" for c in stream)
    for piece in pieces:
        parts.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)
