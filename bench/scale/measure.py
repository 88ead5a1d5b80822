"""Clocks, peak memory and the rates the floors use (matmul, streaming read, |x|^2.4), the
same way on CPU and CUDA.

CUDA work is asynchronous, so every interval that is attributed to a part of the work
(Hessians, solves) synchronises at both ends; per-layer times inside a model's forward use
CUDA events instead, which time the layer without stalling the stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_SECONDS = 0.01
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = [time.perf_counter]


def set_clock(name: str) -> None:
    """'wall', or 'cpu': the main thread's CPU time, immune to other jobs on a shared machine.

    The CPU clock only measures the work when torch computes on the calling thread
    (one intra-op thread) and nothing runs asynchronously (no CUDA).
    """
    _clock[0] = CLOCKS[name]


def now() -> float:
    return _clock[0]()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(key: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 1024 * (_status_kib("VmRSS") or 0)


class PeakHostMemory:
    """Peak resident memory of this process over a block.

    The kernel's high-water mark (VmHWM) is exact but only per block when it can be reset
    through /proc/self/clear_refs; where that is refused (some sandboxes) a thread samples
    the resident size every 10 ms instead, which can miss a spike shorter than that.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakHostMemory:
        if self._reset_hwm():
            self.method = "VmHWM"
        else:
            self.method = "sampled RSS"
            self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = 1024 * (_status_kib("VmHWM") or 0)
        self.peak = max(self.peak, rss_bytes())

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, rss_bytes())

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            return False
        hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
        return hwm is not None and rss is not None and hwm <= rss * 1.05 + 1024


@contextmanager
def peak_gpu_memory(device: torch.device) -> Iterator[dict[str, int]]:
    """{'peak': bytes} of the CUDA caching allocator over the block (0 on CPU)."""
    box = {"peak": 0}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield box
    finally:
        if device.type == "cuda":
            sync(device)
            box["peak"] = int(torch.cuda.max_memory_allocated(device))


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int, seconds: float = 0.5) -> float:
    """FLOP/s of a plain square matmul of `dtype` under the run's current precision settings."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    b = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    for _ in range(3):
        torch.mm(a, b)
    sync(device)
    runs, start = 0, now()
    while True:
        torch.mm(a, b)
        runs += 1
        if runs % 4 == 0:
            sync(device)
            elapsed = now() - start
            if elapsed >= seconds:
                return 2.0 * size**3 * runs / elapsed


def read_bandwidth(dtype: torch.dtype, device: torch.device, nbytes: int, seconds: float = 0.5) -> float:
    """Bytes/s of streaming a `nbytes` tensor once (a sum reads every element): the rate a
    one-token decoding step reads its weights at, when it is bound by memory."""
    elements = nbytes // torch.finfo(dtype).bits * 8
    data = torch.ones(elements, dtype=dtype, device=device)
    for _ in range(2):
        data.sum()
    sync(device)
    runs, start = 0, now()
    while True:
        data.sum()
        runs += 1
        if runs % 4 == 0:
            sync(device)
            elapsed = now() - start
            if elapsed >= seconds:
                return data.numel() * data.element_size() * runs / elapsed


def pow_rate(device: torch.device, elements: int = 1 << 20, seconds: float = 0.5) -> float:
    """|x|^2.4 evaluations per second on a cache-sized float32 tensor: the rate that bounds the
    exact clip search, which evaluates one such power per weight and shrink factor."""
    data = torch.rand(elements, device=device)
    out = torch.empty_like(data)
    for _ in range(2):
        torch.pow(data, 2.4, out=out)
    sync(device)
    runs, start = 0, now()
    while True:
        torch.pow(data, 2.4, out=out)
        runs += 1
        if runs % 4 == 0:
            sync(device)
            elapsed = now() - start
            if elapsed >= seconds:
                return elements * runs / elapsed


class LayerClock:
    """Time spent inside each decoder layer during a model's forwards, by forward hooks."""

    def __init__(self, layers: list[nn.Module], device: torch.device) -> None:
        self.layers = layers
        self.device = device
        self._cpu: list[float] = [0.0] * len(layers)
        self._events: list[list[tuple[torch.cuda.Event, torch.cuda.Event]]] = [[] for _ in layers]
        self._open: dict[int, object] = {}
        self._handles: list = []

    def __enter__(self) -> LayerClock:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(lambda *_, i=index: self._start(i)))
            self._handles.append(layer.register_forward_hook(lambda *_, i=index: self._stop(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _start(self, index: int) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._open[index] = event
        else:
            self._open[index] = now()

    def _stop(self, index: int) -> None:
        begun = self._open.pop(index)
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events[index].append((begun, end))
        else:
            self._cpu[index] += now() - begun

    def seconds(self) -> list[float]:
        if self.device.type != "cuda":
            return list(self._cpu)
        sync(self.device)
        return [sum(a.elapsed_time(b) for a, b in pairs) / 1000.0 for pairs in self._events]
