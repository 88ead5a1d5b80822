"""The uniform weight grid (method §5): fitting scales, rounding to codes, bit packing.

Every shape carries arbitrary leading dimensions so one call fits all experts of a
projection at once. Rows are split into groups of `groupsize` columns (the whole row
when per-channel), and each (row, group) gets one scale and zero point.

Scales are rounded to `GridSpec.scale_dtype` (the dtype a server multiplies with: vLLM
casts scales to its activation dtype) as soon as they are fitted, before any code is
computed from them, so the weights the solver, the evaluation and a served checkpoint see
are the same numbers. Dequantization, scale·(code − zero), is exact in float32.
Packing is compressed-tensors' own (`pack-quantized`: a dense little-endian bit stream per
row in int32 words), so the in-memory codes are already the checkpoint's `weight_packed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32

from moequant.errors import UsageError, require
from moequant.quant.options import check_choices, option

SCALE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GridSpec:
    """The grid every algorithm quantizes onto: its width, groups, symmetry, clip search and scale dtype."""

    wbits: int = option(help="weight bits, 2-8")
    sym: bool = option(
        True,
        help="symmetric grid, zero point fixed at 2^(b-1)",
        off="--asym",
        off_help="asymmetric grid; refused: stock transformers cannot load asymmetric pack-quantized weights",
    )
    groupsize: int = option(-1, help="columns per scale group; -1 = per output channel")
    clip: bool = option(True, help="MSE clip search when fitting the grid", off_help="skip the MSE clip search")
    clip_norm: float = option(2.4, help="clip search: the exponent p of its error, the sum of |w - q|^p")
    clip_grid: int = option(100, help="clip search: n in its shrink factors 1, 1 - 1/n, 1 - 2/n, ...")
    clip_maxshrink: float = option(0.8, help="clip search: how much of the range its smallest factor cuts away")
    scale_dtype: str = option(
        "float32",
        help="dtype scales are rounded to before codes are computed (the serving dtype)",
        choices=SCALE_DTYPES,
        shown_default="the model's dtype",
    )

    def __post_init__(self) -> None:
        require(
            isinstance(self.wbits, int) and 2 <= self.wbits <= 8,
            f"wbits must be an integer from 2 to 8, got {self.wbits!r}",
        )
        require(
            self.groupsize == -1 or (isinstance(self.groupsize, int) and self.groupsize > 0),
            f"groupsize must be -1 (per output channel) or a positive integer, got {self.groupsize!r}",
        )
        require(self.clip_norm > 0, f"clip_norm must be positive, got {self.clip_norm!r}")
        require(self.clip_grid >= 1, f"clip_grid must be at least 1, got {self.clip_grid!r}")
        require(0 <= self.clip_maxshrink < 1, f"clip_maxshrink must lie in [0, 1), got {self.clip_maxshrink!r}")
        check_choices(self)

    @property
    def maxq(self) -> int:
        return 2**self.wbits - 1

    @property
    def scale_torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.scale_dtype)

    def group_of(self, columns: int) -> int:
        return columns if self.groupsize == -1 else self.groupsize

    def check_in_features(self, in_features: int, where: str) -> None:
        """Groups must tile a row exactly so codes and scales stay rectangular."""
        if self.groupsize != -1 and in_features % self.groupsize:
            raise UsageError(
                f"groupsize {self.groupsize} does not divide the {in_features} input features of {where}"
            )


@dataclass
class QuantizedWeight:
    """Integer codes [..., out, in] (uint8) with scales and zero points [..., out, groups].

    `scale` is held in the grid's scale dtype, the values a server multiplies with.
    """

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


def round_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`scale` in `dtype`, never rounded down to zero (a tiny range in float16 would underflow)."""
    return scale.to(dtype).clamp(min=torch.finfo(dtype).tiny)


def params_from_range(
    xmin: torch.Tensor, xmax: torch.Tensor, spec: GridSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (in the grid's scale dtype) and float32 zero point covering [xmin, xmax] (xmin ≤ 0 ≤ xmax)."""
    if spec.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = round_scale((xmax - xmin) / spec.maxq, spec.scale_torch_dtype)
    if spec.sym:
        zero = torch.full(scale.shape, symmetric_zero(spec.wbits), dtype=torch.float32, device=scale.device)
    else:
        zero = torch.round(-xmin / scale.float()).clamp(0, spec.maxq)
    return scale, zero


def to_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Codes for `w` under elementwise-broadcast `scale`/`zero` (float, integral values)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return scale * (to_codes(w, scale, zero, maxq) - zero)


CLIP_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
"""Candidate errors scored per step of the clip search: a few MiB on CPU, where each
elementwise pass then stays in cache and Python overhead is amortised; large on CUDA, where
fewer, bigger kernels pay."""


def clip_shrinks(spec: GridSpec) -> torch.Tensor:
    """The shrink factors 1, 1 − 1/grid, … in float32, the value a Python-float factor multiplies as."""
    steps = int(spec.clip_maxshrink * spec.clip_grid)
    return torch.tensor([1 - step / spec.clip_grid for step in range(steps)], dtype=torch.float32)


def fit_grid(w: torch.Tensor, spec: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (row, group) scale and zero [..., out, groups] for `w` [..., out, in], with optional clip search.

    The clip search shrinks the range by factors 1, 1 − 1/grid, … and keeps, per (row, group),
    the first factor minimising Σ|w − q(w)|^norm; this trades a little clipping of the largest
    weights for a finer grid everywhere else.
    """
    wf = _grouped(w.float(), spec.group_of(w.shape[-1]))
    xmin = wf.amin(dim=-1).clamp(max=0)
    xmax = wf.amax(dim=-1).clamp(min=0)
    scale, zero = params_from_range(xmin, xmax, spec)
    shrinks = clip_shrinks(spec).to(w.device)
    if not spec.clip or not len(shrinks):
        return scale, zero
    _clip_search(wf.reshape(-1, wf.shape[-1]), xmin.reshape(-1), xmax.reshape(-1), shrinks, spec,
                 scale.view(-1), zero.view(-1))
    return scale, zero


SCREEN_MARGIN = 1e-3
"""Relative slack of the screening bound: far above float32 summation error (≈1e-6), so a
screened-out factor is truly worse than the leader and could never have been picked."""

VECTOR_RUN = 64
"""Eager CPU kernels run each contiguous stretch of a tensor in vector steps and its last
few elements (under one step) through the scalar function, and the scalar and vector `pow`
differ in the last bit. A stretch that is a whole multiple of this is all vector, so a
`pow` over it gives the same floats wherever in a tensor an element lies."""

_GRAIN = 32768
"""ATen's parallel grain: an elementwise CPU pass under it runs on one thread."""


def _whole_vector_runs(numel: int, run: int) -> bool:
    """Whether a CPU pass over `numel` elements in contiguous stretches of `run` is all vector.

    With several threads ATen cuts the pass into ceil(numel / tasks) pieces, tasks =
    min(threads, ceil(numel / grain)); each piece is a stretch of its own.
    """
    if numel % VECTOR_RUN or run % VECTOR_RUN:
        return False
    threads = torch.get_num_threads()
    if threads == 1 or numel < _GRAIN:
        return True
    tasks = min(threads, -(-numel // _GRAIN))
    return -(-numel // tasks) % VECTOR_RUN == 0


def _exact_errors(d: torch.Tensor, norm: float) -> torch.Tensor:
    """Σ|d|^norm over the last dimension: the search's own error, computed one way everywhere."""
    return d.abs_().pow_(norm).sum(dim=-1)


def _exact_rows(d: torch.Tensor, factor: torch.Tensor, group: torch.Tensor, norm: float) -> torch.Tensor:
    """`_exact_errors` of the rows d[factor, group], gathered into a tensor padded (with copies
    of the first row) to whole vector runs, so each row's floats are the unscreened search's."""
    count, width = len(factor), d.shape[-1]
    padded = count
    while not _whole_vector_runs(padded * width, padded * width):
        padded += 1
    if padded > count:
        factor = torch.cat([factor, factor[:1].expand(padded - count)])
        group = torch.cat([group, group[:1].expand(padded - count)])
    return _exact_errors(d[factor, group], norm)[:count]


def error_bound(magnitudes: torch.Tensor, norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σd², a lower bound on Σ|d|^norm) over the last dimension of |d|, for norm ≥ 2.

    log Σ|d|^r is convex in r (Hölder), so Σd² ≤ (Σ|d|)^λ (Σ|d|^p)^(1−λ) with
    λ = (p−2)/(p−1): Σ|d|^p ≥ (Σd²)^(p−1) / (Σ|d|)^(p−2). Two row reductions instead of a
    `pow` per element; within 4 % of the true error on uniform rounding errors at p = 2.4.
    """
    ones = magnitudes.sum(dim=-1)
    squares = torch.linalg.vector_norm(magnitudes, dim=-1).square_()
    bound = squares.pow(norm - 1).div_(ones.pow(norm - 2)).masked_fill_(ones == 0, 0.0)
    return squares, bound


def _screened_errors(d: torch.Tensor, norm: float) -> torch.Tensor:
    """Σ|d|^norm [factors, groups] for the factors that can still win, +inf for the others.

    Every factor's error is bounded from below first (`error_bound`). Each group's leader
    (least Σd²) gets its exact error first; a factor whose bound exceeds it (by
    SCREEN_MARGIN) is worse than the leader, so it cannot be the first minimum. The factors
    left are scored exactly, on their own rows of `d`, with the very arithmetic of the
    unscreened search (the row sum of a contiguous row is the same in any layout, `abs` is
    idempotent, and `_exact_rows` keeps every `pow` in vector runs), so the minimum and its
    position are the same. A bound that is not a finite number (an overflow) never rules a
    factor out.
    """
    factors, groups, width = d.shape
    squares, bound = error_bound(d.abs_(), norm)
    leader = squares.argmin(dim=0)
    rows = torch.arange(groups, device=d.device)
    errors = torch.full_like(squares, float("inf"))
    errors[leader, rows] = _exact_rows(d, leader, rows, norm)
    keep = ~(bound > errors[leader, rows] * (1 + SCREEN_MARGIN)) | bound.isinf()
    keep[leader, rows] = False
    factor, group = keep.nonzero(as_tuple=True)
    if factor.numel():
        errors[factor, group] = _exact_rows(d, factor, group, norm)
    return errors


def _screenable(d: torch.Tensor, norm: float) -> bool:
    """Screening needs norm ≥ 2 (its bound) and a CPU block whose own `pow` would be all vector
    (`VECTOR_RUN`), so the unscreened floats it must reproduce do not depend on position."""
    factors, groups, width = d.shape
    run = d.numel() if d.is_contiguous() else groups * width
    return norm >= 2 and d.device.type == "cpu" and _whole_vector_runs(d.numel(), run)


def _clip_search(
    wf: torch.Tensor, xmin: torch.Tensor, xmax: torch.Tensor, shrinks: torch.Tensor, spec: GridSpec,
    scale: torch.Tensor, zero: torch.Tensor,
) -> None:
    """Write the best clipped grid of each group `wf` [groups, g] into `scale` and `zero` [groups].

    All factors of a block of groups are scored at once, with the very arithmetic of scoring
    them one by one (so the choice is the same), over a block small enough to stay in cache:
    each elementwise operation is one pass over [factors, block, g] instead of one pass over
    the whole weight per factor. On the symmetric grid the error q − w is formed as
    clamp(round(w/s), −z, maxq − z)·s − w, which equals (clamp(round(w/s) + z, 0, maxq) − z)·s − w
    exactly (small integers in float) in two passes fewer. For norm ≥ 2 most factors are
    ruled out by a bound before any `pow` (`_screened_errors`). NaN errors never win, as
    `err < best` never holds for them.
    """
    candidates, (groups, width) = len(shrinks), wf.shape
    budget = CLIP_CHUNK_ELEMENTS.get(wf.device.type, CLIP_CHUNK_ELEMENTS["cuda"])
    per_step = max(1, budget // (candidates * width))
    buffer = torch.empty(candidates, min(per_step, groups), width, device=wf.device)
    for start in range(0, groups, per_step):
        stop = min(start + per_step, groups)
        s, z = params_from_range(shrinks[:, None] * xmin[start:stop], shrinks[:, None] * xmax[start:stop], spec)
        sf, zf = s.float().unsqueeze(-1), z.unsqueeze(-1)
        d = torch.div(wf[start:stop], sf, out=buffer[:, : stop - start]).round_()
        if spec.sym:  # one zero point for all: a scalar clamp, many times cheaper than a broadcast one
            offset = symmetric_zero(spec.wbits)
            d.clamp_(-offset, spec.maxq - offset)
        else:
            d.add_(zf).clamp_(0, spec.maxq).sub_(zf)
        d.mul_(sf).sub_(wf[start:stop])
        if _screenable(d, spec.clip_norm):
            err = _screened_errors(d, spec.clip_norm)
        else:
            err = _exact_errors(d, spec.clip_norm)
        pick = err.nan_to_num_(nan=float("inf")).argmin(dim=0, keepdim=True)
        scale[start:stop] = s.gather(0, pick)[0]
        zero[start:stop] = z.gather(0, pick)[0]


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, sym: bool) -> QuantizedWeight:
    group = w.shape[-1] // scale.shape[-1]
    codes = to_codes(w.float(), _expand(scale, group), _expand(zero, group), 2**bits - 1)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero.float(), bits, sym)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, groupsize: int) -> torch.Tensor:
    return _expand(scale.float(), groupsize) * (codes.float() - _expand(zero.float(), groupsize))


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes 0..2^bits−1 [..., out, in] as compressed-tensors packs them: int32 [..., out, ⌈in·bits/32⌉].

    compressed-tensors stores signed values q = code − 2^(bits−1); for the symmetric grid
    that is exactly the signed integer scale multiplies.
    """
    offset = 1 << (bits - 1)
    signed = (codes.detach().to("cpu", torch.int16) - offset).to(torch.int8)
    return pack_to_int32(signed.reshape(-1, *signed.shape[-2:]), bits).reshape(*signed.shape[:-1], -1)


def unpack(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 codes [..., out, in] of `pack`'s output."""
    rows = packed.reshape(-1, *packed.shape[-2:])
    signed = unpack_from_int32(rows, bits, torch.Size((rows.shape[0], *shape[-2:])))
    return (signed.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8).reshape(shape)
