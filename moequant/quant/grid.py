"""The uniform weight grid (SPEC §5): fitting scales, rounding to codes, bit packing.

Every shape carries arbitrary leading dimensions so one call fits all experts of a
projection at once. Rows are split into groups of `groupsize` columns (the whole row
when per-channel), and each (row, group) gets one scale and zero point. Dequantization
goes through `dequantize` everywhere — solver, driver and loader — so a checkpoint
reproduces the in-memory quantized weights bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GridSpec:
    bits: int
    sym: bool = True
    groupsize: int = -1
    clip: bool = True
    clip_norm: float = 2.4
    clip_grid: int = 100
    clip_maxshrink: float = 0.8

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def group_of(self, columns: int) -> int:
        return columns if self.groupsize == -1 else self.groupsize


@dataclass
class QuantizedWeight:
    """Integer codes [..., out, in] (uint8) with scales and zero points [..., out, groups]."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    sym: bool

    @property
    def groupsize(self) -> int:
        return self.codes.shape[-1] // self.scale.shape[-1]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.codes, self.scale, self.zero, self.groupsize).to(dtype)


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    return w.reshape(*w.shape[:-1], w.shape[-1] // group, group)


def _expand(params: torch.Tensor, group: int) -> torch.Tensor:
    return params.repeat_interleave(group, dim=-1)


def symmetric_zero(bits: int) -> float:
    """The fixed zero point of the symmetric grid (codes 0..maxq centred on (maxq+1)/2)."""
    return float((2**bits) // 2)


def params_from_range(
    xmin: torch.Tensor, xmax: torch.Tensor, spec: GridSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering [xmin, xmax] (xmin ≤ 0 ≤ xmax)."""
    if spec.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / spec.maxq
    if spec.sym:
        zero = torch.full_like(scale, symmetric_zero(spec.bits))
    else:
        zero = torch.round(-xmin / scale).clamp(0, spec.maxq)
    return scale, zero


def to_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Codes for `w` under elementwise-broadcast `scale`/`zero` (float, integral values)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return scale * (to_codes(w, scale, zero, maxq) - zero)


def fit_grid(w: torch.Tensor, spec: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (row, group) scale and zero [..., out, groups] for `w` [..., out, in], with optional clip search.

    The clip search shrinks the range by factors 1, 1 − 1/grid, … and keeps, per (row, group),
    the factor minimising Σ|w − q(w)|^norm; this trades a little clipping of the largest
    weights for a finer grid everywhere else.
    """
    wf = _grouped(w.float(), spec.group_of(w.shape[-1]))
    xmin = wf.amin(dim=-1).clamp(max=0)
    xmax = wf.amax(dim=-1).clamp(min=0)
    scale, zero = params_from_range(xmin, xmax, spec)
    if not spec.clip:
        return scale, zero
    best = torch.full_like(scale, float("inf"))
    for step in range(int(spec.clip_maxshrink * spec.clip_grid)):
        shrink = 1 - step / spec.clip_grid
        s, z = params_from_range(shrink * xmin, shrink * xmax, spec)
        q = fake_quantize(wf, s.unsqueeze(-1), z.unsqueeze(-1), spec.maxq)
        err = (q - wf).abs_().pow_(spec.clip_norm).sum(dim=-1)
        better = err < best
        best = torch.where(better, err, best)
        scale = torch.where(better, s, scale)
        zero = torch.where(better, z, zero)
    return scale, zero


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, sym: bool) -> QuantizedWeight:
    group = w.shape[-1] // scale.shape[-1]
    codes = to_codes(w.float(), _expand(scale, group), _expand(zero, group), 2**bits - 1)
    return QuantizedWeight(codes.to(torch.uint8), scale.float(), zero.float(), bits, sym)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, groupsize: int) -> torch.Tensor:
    return _expand(scale.float(), groupsize) * (codes.float() - _expand(zero.float(), groupsize))


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes < 2**bits as a dense little-endian bit stream of `bits` bits each (1-D uint8)."""
    flat = codes.detach().to("cpu", torch.uint8).reshape(-1).numpy()
    bitplanes = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1), bitorder="little"))


def unpack(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    count = int(np.prod(shape))
    stream = np.unpackbits(packed.numpy(), bitorder="little")[: count * bits].reshape(count, bits)
    planes = np.zeros((count, 8), dtype=np.uint8)
    planes[:, :bits] = stream
    return torch.from_numpy(np.packbits(planes, axis=1, bitorder="little").reshape(shape))
