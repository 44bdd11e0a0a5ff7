"""Tables and detail views for people; they read plain records, not Model objects."""

from typing import Any

from modelctl.record.units import format_bytes, format_memory, format_parameters

FIT_STYLES = {"full GPU": "green", "partial GPU": "yellow", "CPU only": "cyan", "fits": "green",
              "won't fit": "red", "remote": "dim"}  # fmt: skip


def fit_cell(level: str) -> str:
    style = FIT_STYLES.get(level)
    return f"[{style}]{level}[/{style}]" if style else level


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 1024 and value % 1024 == 0 and value % 1000:  # 131072 is 128k; 128000 is not
        return f"{value // 1024}k"
    return f"{value:,}"


def models_table(
    records: list[dict[str, Any]],
    *,
    title: str | None = None,
    fits: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """The registry as a table; with `fits`, how each model fits this machine too."""
    from rich.table import Table

    columns = ["ID", "BACKEND", "PARAMS", "QUANT", "CONTEXT", "DISK", "INSTALLED", "TAGS"]
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns + (["FIT", "NEEDS"] if fits is not None else []):
        table.add_column(column, no_wrap=column in ("ID", "BACKEND"))
    for r in records:
        row = [
            r["id"],
            r["backend"],
            format_parameters(r.get("parameters")),
            r.get("quantization") or "-",
            _count(r.get("context_length")),
            format_bytes(r.get("file_size") or r.get("download_size")),
            "yes" if r.get("installed") else "-",
            ", ".join(r.get("tags") or ()),
        ]
        if fits is not None:
            fit = fits.get(r["id"], {})
            row += [fit_cell(fit.get("level", "-")), format_memory(fit.get("total") or None)]
        table.add_row(*row)
    return table


_BYTES = {"file_size", "download_size", "min_memory"}


def _shown(key: str, value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    if key in _BYTES:
        return f"{format_bytes(value)} ({value:,} bytes)"
    if key == "parameters":
        return f"{format_parameters(value)} ({value:,})"
    if key in ("context_length", "max_output_tokens"):
        return _count(value)
    if key == "pricing":
        return f"{value['input']} in / {value['output']} out {value['currency']} per 1M tokens"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def model_detail(record: dict[str, Any], groups: list[str]) -> Any:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in record.items():
        table.add_row(key, _shown(key, value))
    table.add_row("groups", _shown("groups", groups))
    return table
