"""Measuring: `stats` (what the usage ledger recorded), `profile` (measure a model here with
real requests) and `compare` (profiles and catalog facts side by side)."""

import time
from typing import Annotated, Any

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt
from modelctl.record.errors import InvalidRequest


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.command("profile")(profile)
    app.command("compare")(compare)


def profile(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A registered model.")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000, help="Rounds of requests.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Measure a model here: latency p50/p95, time to first token, prompt and generation
    tokens/s, success rate and peak memory. Stored, and used by `recommend --priority speed`."""
    manager = _common.state(ctx).manager
    result = manager.profile(model, n)
    if as_json:
        _common.emit_json(result)
        return
    record = manager.registry[result["model"]].to_dict()
    _common.console().print(_profile_table({result["model"]: result}, {record["id"]: record}))


def compare(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="Two or more registered models.")],
    as_json: JsonOpt = False,
) -> None:
    """Profiles and facts side by side (profile them first for measured figures)."""
    manager = _common.state(ctx).manager
    records = {r.id: r.to_dict() for r in manager.registry[list(models)]}
    found = manager.profiles(*records)
    if as_json:
        _common.emit_json({m: {"record": r, "profile": found.get(m)} for m, r in records.items()})
        return
    _common.console().print(_profile_table(found, records))
    missing = [m for m in records if m not in found]
    if missing:
        _common.say(f"not profiled yet: {', '.join(missing)} (modelctl profile MODEL)")


def _profile_table(found: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    from modelctl.record.units import format_bytes, format_memory, format_parameters

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("MODEL", "PARAMS", "QUANT", "DISK", "P50", "P95", "TTFT", "GEN TOK/S",
               "PROMPT TOK/S", "OK", "PEAK MEM", "MEASURED")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column == "MODEL" else "right")
    for model in records or found:
        p, r = found.get(model) or {}, records.get(model) or {}
        speed = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
        table.add_row(
            model, format_parameters(r.get("parameters")), r.get("quantization") or "-",
            format_bytes(r.get("file_size")), _ms(p.get("latency_p50_ms")),
            _ms(p.get("latency_p95_ms")), _ms(p.get("ttft_ms")),
            speed(p.get("generation_tokens_per_second")), speed(p.get("prompt_tokens_per_second")),
            f"{p['success_rate']:.0%}" if p else "-",
            format_memory(p["peak_memory"]) if p else "-", _ago(p.get("at")),
        )  # fmt: skip
    return table


def stats(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="One model (default: every model).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only the last 30m, 24h, 7d…")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests, last use, latency (avg, p50, p95), tokens/s, success rate and cost."""
    manager = _common.state(ctx).manager
    data = manager.usage_stats(model, since=_since(since))
    if as_json:
        _common.emit_json(data)
        return
    if not data["overall"]["requests"]:
        _common.say("no requests recorded" + (f" for {model}" if model else ""))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("MODEL", "REQUESTS", "OK", "LAST USED", "AVG", "P50", "P95", "TTFT", "TOK/S",
               "TOKENS IN/OUT", "COST")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column == "MODEL" else "right")
    rows = list(data["models"].items())
    if len(rows) > 1:
        rows.append(("(all)", data["overall"]))
    for name, s in rows:
        table.add_row(
            name,
            f"{s['requests']:,}",
            f"{s['success_rate']:.0%}",
            _ago(s["last_used"]),
            _ms(s["latency_avg_ms"]),
            _ms(s["latency_p50_ms"]),
            _ms(s["latency_p95_ms"]),
            _ms(s["ttft_avg_ms"]),
            f"{s['tokens_per_second']:.1f}" if s["tokens_per_second"] else "-",
            f"{s['tokens_in']:,}/{s['tokens_out']:,}",
            f"{s['cost']:.4f}" if s["cost"] else "0",
        )
    _common.console().print(table)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    from modelctl.record.units import parse_duration

    days = text.strip().lower()
    try:
        seconds = float(days[:-1]) * 86400 if days.endswith("d") else parse_duration(text)
    except ValueError as exc:
        raise InvalidRequest(f"--since: {exc}", hint="e.g. 30m, 24h, 7d") from None
    if seconds < 0:
        raise InvalidRequest("--since must be a positive duration", hint="e.g. 30m, 24h, 7d")
    return time.time() - seconds


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def _ago(stamp: Any) -> str:
    if not stamp:
        return "-"
    seconds = max(0.0, time.time() - float(stamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
