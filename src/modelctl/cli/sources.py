"""Commands that talk to backends: backends, sync, pull, rm."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt, YesOpt
from modelctl.record.units import format_bytes

if TYPE_CHECKING:
    from modelctl.manager import ModelManager


def register(app: typer.Typer) -> None:
    app.command("backends")(backends)
    app.command("sync")(sync)
    app.command("pull")(pull)
    app.command("rm")(rm)


def _manager(ctx: typer.Context) -> "ModelManager":
    return _common.state(ctx).manager


def backends(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every backend: reachable or not, where, how many models, what to do if not, and what it
    is: local or remote, what it can do (install, delete), the runtime that runs its models."""
    manager = _manager(ctx)
    statuses = manager.check_backend_status()
    kinds = manager.backend_kinds()
    if as_json:
        _common.emit_json([s.to_dict() | {"kind": kinds[s.name].to_dict()} for s in statuses])
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("BACKEND", "STATUS", "MODELS", "KIND", "RUNTIME", "WHERE", "NOTE"):
        table.add_column(column, no_wrap=column != "NOTE")
    for s in statuses:
        kind = kinds[s.name]
        state = "[green]ok[/green]" if s.available else "[red]unavailable[/red]"
        note = "; ".join(x for x in (s.error, s.hint) if x)
        version = f" {s.version}" if s.version else ""
        can = [w for w, yes in (("install", kind.can_install), ("delete", kind.can_delete)) if yes]
        what = ("local" if kind.local else "remote") + (f" ({', '.join(can)})" if can else "")
        count = "-" if s.models is None else str(s.models)
        runtime = ", ".join(kind.runtimes) or "-"
        table.add_row(s.name, state + version, count, what, runtime, s.url or "-", note)
    _common.console().print(table)


def sync(
    ctx: typer.Context,
    backend: Annotated[
        list[str] | None, typer.Option("--backend", "-b", help="Only these.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Discover across every reachable backend and update the registry (user metadata is kept)."""
    report = _manager(ctx).sync(only=backend)
    if as_json:
        _common.emit_json(report.to_dict())
        return
    _common.say(
        f"added {len(report.added)}, updated {len(report.updated)}, merged {len(report.merged)}, "
        f"marked missing {len(report.missing)}"
    )
    for name, error in report.errors.items():
        _common.say(f"  skipped {name}: {error}")
    for line in report.skipped:
        _common.say(f"  unreadable: {line}")


def pull(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="llama3.2:3b, hf:ORG/REPO, ORG/REPO/FILE.gguf, a catalog name.")
    ],
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="ollama, llamacpp, huggingface.")
    ] = None,
    quantization: Annotated[
        str | None, typer.Option("--quant", help="Q4_K_M, Q8_0, … (GGUF repos).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download even if it won't fit here.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a model through its backend, with progress; checks the fit first."""
    manager = _manager(ctx)
    if as_json:
        model = manager.install_model(name, backend=backend, quantization=quantization, force=force)
        _common.emit_json(model.to_dict())
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=_common.console(stderr=True), transient=True,
    )  # fmt: skip
    tasks: dict[str, Any] = {}

    def report(event: Any) -> None:
        label = event.status.split(" sha256")[0][:48]
        if event.total:
            task = tasks.get(label)
            if task is None:
                task = tasks[label] = bar.add_task(label, total=event.total)
            bar.update(task, completed=event.completed or 0, total=event.total)
        elif event.status:
            bar.console.print(event.status)

    with bar:
        model = manager.install_model(
            name, backend=backend, quantization=quantization, force=force, progress=report
        )
    _common.say(
        f"installed [bold]{model.id}[/bold] ({model.backend}, {format_bytes(model.file_size)})"
    )


def rm(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A registered, installed model.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; delete nothing.")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a model's files through its backend; the registry keeps it, not installed."""
    manager = _manager(ctx)
    found = manager.registry[model]
    plan = manager.delete_model(found.id, dry_run=True)
    if dry_run:
        if as_json:
            _common.emit_json(plan.to_dict())
        else:
            _common.say(f"would free {format_bytes(plan.bytes_freed)} by deleting:")
            for path in plan.paths:
                _common.say(f"  {path}")
        return
    _common.confirm(
        f"Delete {found.id} ({format_bytes(plan.bytes_freed)}) from {found.backend}?", yes
    )
    done = manager.delete_model(found.id)
    if as_json:
        _common.emit_json(done.to_dict())
    else:
        _common.say(f"deleted {found.id}: freed {format_bytes(done.bytes_freed)}")
