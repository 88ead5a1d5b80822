"""Planned and peak memory of a stage: said in its log, written to its metadata, checked before work.

A job that cannot fit should fail in its first second with the numbers, not after an hour
in the middle of layer 20; and a job that fits should say how close it came, so the next
run's SLURM request can be sized from the last run's metadata.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

import torch

from moequant.errors import UsageError

GIB = 1024**3


def gib(size: int) -> str:
    """Sizes as a log reads them: GiB, or MiB below one GiB (a small model's plan is not all zeros)."""
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 2**20:.1f} MiB"


def module_bytes(module: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of a module's parameters and buffers, in `dtype` when given (a meta skeleton has no real dtype)."""
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        size = torch.empty((), dtype=dtype).element_size() if dtype is not None and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * size
    return total


def available_bytes(device: torch.device) -> int | None:
    """What `device` can still hold: free CUDA memory, or the kernel's MemAvailable for host memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_host_bytes() -> int:
    """The process's high-water RSS (Linux reports it in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_device_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def peaks(device: torch.device) -> dict[str, int | None]:
    """The measured high-water marks a stage writes to its metadata."""
    return {"peak_host_bytes": peak_host_bytes(), "peak_device_bytes": peak_device_bytes(device)}


def say_peaks(stage: str, device: torch.device) -> dict[str, int | None]:
    """Log the stage's peaks (the job log shows how close it came) and return them for its metadata."""
    from moequant.progress import say

    measured = peaks(device)
    device_part = f", peak {device} {gib(measured['peak_device_bytes'])}" if measured["peak_device_bytes"] else ""
    say(stage, f"peak host RSS {gib(measured['peak_host_bytes'])}{device_part}")
    return measured


@dataclass
class MemoryPlan:
    """Bytes a stage will hold, by part, on the host and on its compute device (the same place on CPU)."""

    stage: str
    device: torch.device
    host: dict[str, int] = field(default_factory=dict)
    on_device: dict[str, int] = field(default_factory=dict)

    def _where(self) -> dict[str, dict[str, int]]:
        if self.device.type == "cpu":
            return {"host": {**self.host, **self.on_device}}
        return {"host": self.host, str(self.device): self.on_device}

    def describe(self) -> str:
        return "; ".join(
            f"{where} {gib(sum(parts.values()))} ({', '.join(f'{k} {gib(v)}' for k, v in parts.items())})"
            for where, parts in self._where().items()
        )

    def check(self) -> None:
        """One line with the numbers when a planned total exceeds what its place has free."""
        for where, parts in self._where().items():
            need = sum(parts.values())
            have = available_bytes(self.device if where != "host" else torch.device("cpu"))
            if have is not None and need > have:
                raise UsageError(
                    f"{self.stage} needs about {gib(need)} of {where} memory "
                    f"({', '.join(f'{k} {gib(v)}' for k, v in parts.items())}) but {gib(have)} is available"
                )

    def report(self) -> dict[str, object]:
        """Planned parts and the measured peaks, for the stage's metadata."""
        return {"planned": {where: dict(parts) for where, parts in self._where().items()}, **peaks(self.device)}
