"""The reliability suite: each test drives one kind of fault at a scale and reports its figures.

`make test` runs the fast setting; `make soak` (MODELCTL_SOAK=1) the long one. The figures of
every test are printed at the end of the run (the README's reliability section quotes them).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

SOAK = os.environ.get("MODELCTL_SOAK") == "1"

_FIGURES: list[str] = []


def scale(fast: Any, long: Any) -> Any:
    """`fast` under `make test`, `long` under `make soak`."""
    return long if SOAK else fast


@pytest.fixture
def figures(request: pytest.FixtureRequest):
    """`figures("R1", trials=100, corrupt=0)`: one line in the run's summary."""

    def report(name: str, **values: Any) -> None:
        parts = ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in values.items())
        _FIGURES.append(f"{name} ({'soak' if SOAK else 'fast'}): {parts}")

    return report


def _fmt(value: Any) -> str:
    return (
        f"{value:,.3g}"
        if isinstance(value, float)
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
