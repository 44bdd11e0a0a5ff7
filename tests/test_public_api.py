"""The public surface: one sorted __all__, names that load lazily, an import that costs nothing."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import modelctl

PUBLIC = [
    "Capability",
    "Catalog",
    "CatalogEntry",
    "Compatibility",
    "Conflict",
    "ImportFailed",
    "ImportReport",
    "InvalidModel",
    "InvalidQuery",
    "InvalidReference",
    "InvalidRequest",
    "MemoryEstimate",
    "Model",
    "ModelManager",
    "ModelNotFound",
    "ModelRef",
    "ModelctlError",
    "NotFound",
    "Pricing",
    "Purpose",
    "Recommendation",
    "Registry",
    "Settings",
    "SizeClass",
    "Status",
    "SystemInfo",
    "Task",
    "Usage",
    "__version__",
    "parse_ref",
]


def test_all_is_sorted_and_deliberate() -> None:
    """Adding or dropping a public name must be a decision: update PUBLIC with it."""
    assert modelctl.__all__ == sorted(modelctl.__all__)
    assert modelctl.__all__ == PUBLIC


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_every_public_name_loads(name: str) -> None:
    assert getattr(modelctl, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        modelctl.NoSuchThing  # noqa: B018


def test_version_matches_the_package() -> None:
    assert modelctl.__version__ == importlib.metadata.version("modelctl")


def test_import_is_lean() -> None:
    code = (
        "import sys, modelctl\n"
        "heavy = ('pydantic', 'typer', 'rich', 'sqlite3', 'platformdirs', 'psutil', 'gguf',"
        " 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module", ["modelctl.record.units", "modelctl.record.naming", "modelctl.registry.query"]
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_package_docstring_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = modelctl.__doc__.replace("/tmp/modelctl-doc", str(tmp_path / "doc"))
    parser = doctest.DocTestParser()
    test = parser.get_doctest(example, {}, "modelctl", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.failures == 0 and runner.tries == 4
