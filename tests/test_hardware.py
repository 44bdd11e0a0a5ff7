"""System information on this machine (no GPU), with NVML absent, and with a GPU reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelctl.fit.hardware import GPU, nvidia_gpus, system_info


def test_this_machine(tmp_path: Path) -> None:
    info = system_info([tmp_path / "not-yet" / "models"])
    assert info.ram_total > info.ram_available > 0
    assert info.cpu_cores >= 1 and info.cpu_threads >= info.cpu_cores
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.os and info.arch and info.cpu_model
    assert info.disks[0][0] == str(tmp_path / "not-yet" / "models") and info.disks[0][1] > 0
    json.dumps(info.to_dict())  # JSON-ready


@pytest.mark.skipif(Path("/proc/driver/nvidia").exists(), reason="this machine has an NVIDIA GPU")
def test_no_gpu_is_a_normal_answer() -> None:
    info = system_info()
    assert info.gpus == () and info.accelerator is None and info.vram_free == 0
    assert any("no GPU" in note for note in info.notes)


def test_nvml_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    gpus, notes = nvidia_gpus()
    assert gpus == [] and "nvidia-ml-py" in notes[0]
    assert "NVML not installed" in " ".join(system_info().notes)


def test_a_reported_gpu() -> None:
    gpu = GPU(0, "Test GPU", "nvidia", 24 * 2**30, 20 * 2**30)
    info = system_info(gpu_probe=lambda: ([gpu], []))
    assert info.accelerator == "cuda" and info.vram_total == 24 * 2**30
    assert info.vram_free == 20 * 2**30 and not info.unified_memory
    assert info.to_dict()["gpus"][0]["name"] == "Test GPU"
