"""Commands about this machine and what fits it: system, fit, recommend, search."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt
from modelctl.cli._render import fit_cell, models_table
from modelctl.record.errors import InsufficientMemory, ModelctlError
from modelctl.record.kinds import Purpose, Task
from modelctl.record.units import (
    format_bytes,
    format_memory,
    format_parameters,
    parse_bytes,
    parse_count,
)

if TYPE_CHECKING:
    from modelctl.fit.catalog import CatalogEntry


def _positive(value: str | None, parse: Any, option: str, example: str) -> int | None:
    """A size or count option: parsed, and more than zero, or one clear line."""
    if value is None:
        return None
    try:
        number = parse(value)
    except ValueError as exc:
        raise ModelctlError(f"{option}: {exc}") from None
    if number <= 0:
        raise ModelctlError(f"{option} must be more than 0", hint=f"e.g. {option} {example}")
    return number


def _memory(value: str | None) -> int | None:
    return _positive(value, parse_bytes, "--memory", "8G")


def _context(value: str | None) -> int | None:
    return _positive(value, parse_count, "--context", "8k")


MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--memory", "-m", help="Memory to fit in (8G, 16GB); default: free on this machine."
    ),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Context length: 4096, 32k.")]


def register(app: typer.Typer) -> None:
    app.command("system")(system)
    app.command("fit")(fit)
    app.command("recommend")(recommend)
    app.command("search")(search)
    app.command("doctor")(doctor)


def system(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """This machine: OS, CPU, memory, GPUs and free disk where models live."""
    info = _common.state(ctx).manager.system_info()
    if as_json:
        _common.emit_json(info.to_dict())
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("os", f"{info.os} {info.os_version} ({info.arch})")
    table.add_row("python", info.python)
    table.add_row("cpu", f"{info.cpu_model} ({info.cpu_cores} cores, {info.cpu_threads} threads)")
    table.add_row("ram", f"{info.ram_available_str} free of {info.ram_total_str}")
    for gpu in info.gpus:
        kind = "unified memory" if gpu.unified else "VRAM"
        table.add_row(
            f"gpu {gpu.index}",
            f"{gpu.name}: {gpu.memory_free_str} free of {gpu.memory_total_str} {kind}",
        )
    table.add_row("accelerator", info.accelerator or "none (CPU only)")
    for path, free in info.disks:
        table.add_row("disk", f"{format_bytes(free)} free at {path}")
    for note in info.notes:
        table.add_row("note", note)
    _common.console().print(table)


def fit(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="A registered model, a catalog name, or a .gguf path.")
    ],
    memory: MemoryOpt = None,
    context: ContextOpt = None,
    quantization: Annotated[
        str | None, typer.Option("--quant", help="Q4_K_M, Q8_0, F16, …")
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Parallel sequences.")] = 1,
    kv_type: Annotated[
        str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")
    ] = "f16",
    as_json: JsonOpt = False,
) -> None:
    """Will MODEL run here (or in --memory)? The estimate's parts, and the reason in words."""
    manager = _common.state(ctx).manager
    result = manager.check_compatibility(
        model, _memory(memory), context=_context(context), quantization=quantization,
        parallel=parallel, kv_type=kv_type,
    )  # fmt: skip
    if as_json:
        _common.emit_json(result.to_dict())
    else:
        style = "green" if result.fits else "red"
        _common.console().print(
            f"[bold]{result.model}[/bold]: [{style}]{result.level}[/{style}], {result.reason}"
        )
        for line in result.estimate.explain():
            _common.console().print("  " + line)
    if not result.fits:
        raise typer.Exit(InsufficientMemory.exit_code)  # 7, as the exit codes table says


def recommend(
    ctx: typer.Context,
    memory: MemoryOpt = None,
    priority: Annotated[
        Purpose, typer.Option("--priority", "-p", help="speed, balanced or quality.")
    ] = Purpose.BALANCED,
    task: Annotated[Task, typer.Option("--task", "-t")] = Task.CHAT,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The best model in the catalog for this machine (or --memory), priority and task."""
    if priority is Purpose.SPECIALIZED:
        raise typer.BadParameter("priority is speed, balanced or quality", param_hint="--priority")
    manager = _common.state(ctx).manager
    found = manager.recommend_model(
        _memory(memory), str(priority), task=str(task), context=_context(context)
    )
    if as_json:
        _common.emit_json(found.to_dict())
    elif found.model is None:
        _common.console().print(f"[red]no recommendation[/red]: {found.reason}")
    else:
        entry, comp = found.model, found.compatibility
        assert comp is not None
        _common.console().print(
            f"[bold]{entry.id}[/bold] ({entry.name}, {found.quantization}): {found.reason}"
        )
        for line in comp.estimate.explain():
            _common.console().print("  " + line)
        if found.runners_up:
            others = ", ".join(f"{e.id} ({c.level})" for e, c in found.runners_up)
            _common.console().print(f"runners-up: {others}")
    if found.model is None:
        raise typer.Exit(1)


def search(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None, typer.Argument(help="Words to find in ids, names, families, tasks.")
    ] = None,
    task: Annotated[Task | None, typer.Option("--task", "-t")] = None,
    local: Annotated[bool | None, typer.Option("--local/--remote")] = None,
    memory: MemoryOpt = None,
    context: ContextOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the catalog of well-known models; shows how each would fit here."""
    manager = _common.state(ctx).manager
    text = " ".join(words or [])
    entries = manager.catalog.search(text, task=str(task) if task else None, local=local)
    fits = fit_column(entries, memory=_memory(memory), context=_context(context), manager=manager)
    if as_json:
        _common.emit_json([e.to_dict() | {"fit": fits.get(e.id)} for e in entries])
        return
    if not entries:
        _common.say(f"nothing in the catalog matches {text!r}")
        raise typer.Exit(1)
    _common.console().print(catalog_table(entries, fits))


def fit_column(
    entries: "list[CatalogEntry]", *, memory: int | None, context: int | None, manager: Any
) -> dict[str, dict[str, Any]]:
    """How each entry would fit: level and total bytes; remote models need no memory here."""
    from modelctl.fit.estimate import check_compatibility

    system = None if memory is not None else manager.system_info()
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not entry.is_local:
            out[entry.id] = {"level": "remote", "total": 0}
            continue
        comp = check_compatibility(entry, memory=memory, system=system, context=context)
        out[entry.id] = {"level": comp.level, "total": comp.estimate.total}
    return out


def catalog_table(entries: "list[CatalogEntry]", fits: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="catalog", box=None, header_style="bold", pad_edge=False)
    for column in (
        "ID",
        "PARAMS",
        "QUANT",
        "DOWNLOAD",
        "CONTEXT",
        "TASKS",
        "PURPOSE",
        "FIT",
        "NEEDS",
    ):
        table.add_column(column, no_wrap=column == "ID")
    for e in entries:
        size, estimated = e.download_size()
        level = fits.get(e.id, {}).get("level", "-")
        total = fits.get(e.id, {}).get("total") or None
        table.add_row(
            e.id,
            format_parameters(e.parameters),
            e.default_quantization or "-",
            (("~" if estimated else "") + format_bytes(size)) if size else "-",
            f"{e.context_length:,}" if e.context_length else "-",
            ", ".join(e.tasks),
            e.purpose,
            fit_cell(level),
            format_memory(total) if total else "-",
        )
    return table


def list_all(state: Any, records: list[dict[str, Any]], *, as_json: bool) -> None:
    """Registered models and the catalog's others, each with how it fits this machine."""
    from modelctl.fit import estimate as fitting

    manager = state.manager
    system = manager.system_info()
    known = {r["id"] for r in records} | {ref for r in records for ref in r["refs"].values()}
    extra = [e for e in manager.catalog if e.id not in known and not (set(e.refs.values()) & known)]
    fits: dict[str, dict[str, Any]] = {}
    for record in records:
        try:
            facts, _ = fitting.facts_for(
                record["id"], catalog=manager.catalog, registry=state.registry
            )
        except ModelctlError:  # remote, or nothing to estimate from
            level = "remote" if record["backend"] not in manager.schemes.local else "-"
            fits[record["id"]] = {"level": level, "total": 0}
            continue
        comp = fitting.check_compatibility(facts, system=system)
        fits[record["id"]] = {"level": comp.level, "total": comp.estimate.total}
    fits |= fit_column(extra, memory=None, context=None, manager=manager)
    if as_json:
        _common.emit_json(
            {
                "models": [r | {"fit": fits[r["id"]]} for r in records],
                "catalog": [e.to_dict() | {"fit": fits[e.id]} for e in extra],
            }
        )
        return
    _common.console().print(models_table(records, title="registered", fits=fits))
    _common.console().print(catalog_table(extra, fits))


def doctor(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check this machine, the runtimes, every backend, keys and the server; say what to do."""
    findings = _common.state(ctx).manager.doctor()
    if as_json:
        _common.emit_json([f.to_dict() for f in findings])
        return
    marks = {
        "ok": "[green]ok[/green]  ",
        "warn": "[yellow]warn[/yellow]",
        "fail": "[red]fail[/red]",
    }
    console = _common.console()
    for f in findings:
        console.print(f"{marks[f.level]}  {f.area:<9} {f.message}", highlight=False)
    steps = [f.step for f in findings if f.step and f.level != "ok"]
    if steps:
        console.print("\nnext steps:")
        for number, step in enumerate(steps, 1):
            console.print(f"  {number}. {step}", highlight=False)
    if any(f.level == "fail" for f in findings):
        raise typer.Exit(1)
