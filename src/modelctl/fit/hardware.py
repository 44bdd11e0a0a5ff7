"""What this machine has: OS, CPU, memory, GPUs and their free memory, disk where models live.

A machine without a GPU is a normal answer (`gpus == ()`), never an error: NVML missing, no
driver, or a driver that fails all say so in `notes`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelctl.record.units import format_memory

__all__ = ["GPU", "SystemInfo", "system_info"]


@dataclass(frozen=True, slots=True)
class GPU:
    """One accelerator and its memory, in bytes."""

    index: int
    name: str
    vendor: str  # nvidia | apple
    memory_total: int
    memory_free: int
    unified: bool = False  # shares system memory (Apple silicon)

    @property
    def memory_total_str(self) -> str:
        return format_memory(self.memory_total)

    @property
    def memory_free_str(self) -> str:
        return format_memory(self.memory_free)


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """This machine, read once: raw byte counts, and `*_str` properties for people."""

    os: str
    os_version: str
    arch: str
    python: str
    cpu_model: str
    cpu_cores: int  # physical
    cpu_threads: int  # logical
    ram_total: int
    ram_available: int
    gpus: tuple[GPU, ...] = ()
    accelerator: str | None = None  # "cuda", "metal", or None
    disks: tuple[tuple[str, int], ...] = ()  # (folder, bytes free)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def vram_total(self) -> int:
        return sum(g.memory_total for g in self.gpus if not g.unified)

    @property
    def vram_free(self) -> int:
        return sum(g.memory_free for g in self.gpus if not g.unified)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)

    @property
    def ram_total_str(self) -> str:
        return format_memory(self.ram_total)

    @property
    def ram_available_str(self) -> str:
        return format_memory(self.ram_available)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpus"] = [asdict(g) for g in self.gpus]
        data["disks"] = [{"path": p, "free": free} for p, free in self.disks]
        data["vram_total"] = self.vram_total
        data["vram_free"] = self.vram_free
        data["notes"] = list(self.notes)
        return data


def _cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        found = _sysctl("machdep.cpu.brand_string")
        if found:
            return found
    return platform.processor() or platform.machine() or "unknown"


def _sysctl(name: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def nvidia_gpus() -> tuple[list[GPU], list[str]]:
    """GPUs through NVML (the nvidia-ml-py package); none, with the reason, when it is absent."""
    try:
        import pynvml
    except ImportError:
        return [], ["NVML not installed (pip install nvidia-ml-py): NVIDIA GPUs not checked"]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], [f"no NVIDIA driver reachable ({exc})"]
    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GPU(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    vendor="nvidia",
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                )
            )
    except pynvml.NVMLError as exc:
        return gpus, [f"NVML failed while reading GPUs ({exc})"]
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return gpus, []


_nvml_ready: bool | None = None  # NVML initialised once for this process (None: not tried)


def gpu_memory_of(pids: set[int]) -> int | None:
    """Bytes of NVIDIA GPU memory that the processes `pids` hold, summed over every GPU (what
    NVML reports for each process); None where there is no NVML or no NVIDIA driver."""
    global _nvml_ready
    try:
        import pynvml
    except ImportError:
        return None
    if _nvml_ready is None:
        try:
            pynvml.nvmlInit()
            _nvml_ready = True
        except pynvml.NVMLError:
            _nvml_ready = False
    if not _nvml_ready:
        return None
    total = 0
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            device = pynvml.nvmlDeviceGetHandleByIndex(index)
            seen: set[int] = set()
            for query in (
                pynvml.nvmlDeviceGetComputeRunningProcesses,
                pynvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                for proc in query(device):
                    used = getattr(proc, "usedGpuMemory", None)
                    if proc.pid in pids and proc.pid not in seen and isinstance(used, int):
                        seen.add(proc.pid)  # a process listed as both counts once
                        total += used
    except pynvml.NVMLError:
        return None
    return total


def apple_gpu(ram_total: int, ram_available: int) -> list[GPU]:
    """Apple silicon: one GPU sharing system memory; Metal may use about 75% of it by default."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return []
    name = _sysctl("machdep.cpu.brand_string") or "Apple silicon"
    usable = int(ram_total * 0.75)
    return [GPU(0, f"{name} GPU", "apple", usable, min(usable, ram_available), unified=True)]


def system_info(
    folders: Iterable[str | os.PathLike[str]] = (),
    *,
    gpu_probe: Callable[[], tuple[list[GPU], list[str]]] = nvidia_gpus,
) -> SystemInfo:
    """Read this machine. `folders` are where models live: their disks' free space is reported."""
    import psutil

    memory = psutil.virtual_memory()
    gpus, notes = gpu_probe()
    accelerator = "cuda" if gpus else None
    apple = apple_gpu(memory.total, memory.available)
    if apple:
        gpus, accelerator = [*gpus, *apple], "metal"
    if not gpus:
        notes = [*notes, "no GPU: models run on the CPU"]
    disks = []
    for folder in folders:
        path = Path(folder)
        probe = next((p for p in (path, *path.parents) if p.exists()), None)
        if probe is not None:
            disks.append((str(path), shutil.disk_usage(probe).free))
    return SystemInfo(
        os=platform.system(),
        os_version=platform.release(),
        arch=platform.machine(),
        python=platform.python_version(),
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        cpu_threads=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=int(memory.total),
        ram_available=int(memory.available),
        gpus=tuple(gpus),
        accelerator=accelerator,
        disks=tuple(disks),
        notes=tuple(notes),
    )
