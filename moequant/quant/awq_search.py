"""The two searches of AWQ (Lin et al.): per-input-channel scales, then per-row weight clipping.

Scales: s = mean|x|^α (weighted mean when tokens carry routing weights), normalised so
max·min = 1, with α picked from a grid by the output error of the quantized group
Q(W·diag(s))·diag(s)⁻¹ against W on calibration tokens. α = 0 gives s = 1 exactly, so
the search can never end worse than round-to-nearest on its own loss.

Clipping: per (row, group), the quantization range shrinks by ratios 1 … `awq_clip_maxshrink`
and keeps the one with the least error of that group's partial output Σ_k (w − q)_k x_k
over calibration tokens; the grid of method §5 (the range RTN would use) is always one of
the candidates, so clipping never loses to RTN on the same measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from moequant.errors import require
from moequant.quant.grid import GridSpec, QuantizedWeight, fake_quantize, fit_grid, params_from_range, quantize
from moequant.quant.options import option
from moequant.quant.rtn import rtn_quantize

SCALE_FLOOR = 1e-4
"""mean|x| below this is treated as this, so channels that never fire get finite scales."""

ROW_CHUNK_ELEMENTS = 1 << 24
"""Bound on rows × groups × tokens held at once by the clip search."""


@dataclass(frozen=True)
class AWQConfig:
    """AWQ's own options (also MoEQuant+'s); the defaults follow AutoAWQ."""

    awq_n_grid: int = option(20, help="points of the alpha search in [0, 1], both ends included")
    awq_alpha: float | None = option(
        None, help="one fixed alpha in [0, 1] instead of the search", shown_default="searched"
    )
    awq_clip_grid: int = option(20, help="clip search: n in its range ratios 1, 1 - 1/n, 1 - 2/n, ...")
    awq_clip_maxshrink: float = option(0.5, help="clip search: the smallest range ratio it tries, in (0, 1]")
    awq_search_tokens: int = option(8192, help="calibration tokens (evenly spread) each scale search scores")
    awq_clip_tokens: int = option(512, help="calibration tokens (evenly spread) each clip search scores")
    awq_search_clip: bool = option(
        False, help="the alpha search quantizes with the MSE clip of the grid (about 50x slower; alpha 0 is then RTN)"
    )

    def __post_init__(self) -> None:
        require(
            isinstance(self.awq_n_grid, int) and self.awq_n_grid >= 1,
            f"awq_n_grid must be a positive integer, got {self.awq_n_grid!r}",
        )
        require(
            self.awq_alpha is None or (isinstance(self.awq_alpha, (int, float)) and 0 <= self.awq_alpha <= 1),
            f"awq_alpha must be null (searched) or a number in [0, 1], got {self.awq_alpha!r}",
        )
        require(
            isinstance(self.awq_clip_grid, int) and self.awq_clip_grid >= 1,
            f"awq_clip_grid must be a positive integer, got {self.awq_clip_grid!r}",
        )
        require(
            isinstance(self.awq_clip_maxshrink, (int, float)) and 0 < self.awq_clip_maxshrink <= 1,
            f"awq_clip_maxshrink must lie in (0, 1], got {self.awq_clip_maxshrink!r}",
        )
        require(
            isinstance(self.awq_search_clip, bool),
            f"awq_search_clip must be true or false, got {self.awq_search_clip!r}",
        )
        for name in ("awq_search_tokens", "awq_clip_tokens"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"{name} must be a positive integer, got {value!r}")

    def search_grid(self, spec: GridSpec) -> GridSpec:
        """The grid the α search quantizes with: plain min-max as in AWQ, or with method §5's clip.

        With the clip (80 grid fits per candidate) α = 0 is exactly RTN, so the chosen scales
        can never lose to RTN on the search loss; without it the search is ~50× cheaper and
        RTN's clipped grid still competes in the clip search that follows.
        """
        return spec if self.awq_search_clip else replace(spec, clip=False)

    def alphas(self) -> list[float]:
        """Grid points in [0, 1], both ends included; a fixed `alpha` replaces the search."""
        if self.awq_alpha is not None:
            return [float(self.awq_alpha)]
        if self.awq_n_grid == 1:
            return [0.0]
        return [i / (self.awq_n_grid - 1) for i in range(self.awq_n_grid)]


def evenly(count: int, cap: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of at most `cap` of `count` items, spread evenly: a deterministic subsample."""
    if count <= cap:
        return torch.arange(count, device=device)
    return torch.linspace(0, count - 1, cap, device=device).round().long()


def weighted_mean_abs(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t |x_t| / Σ_t w_t per channel for tokens `x` [T, D]; zeros when no weight."""
    total = weight.sum()
    if x.shape[0] == 0 or float(total) == 0:
        return torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    return (weight[:, None] * x.abs()).sum(0) / total


def scales_from_stat(stat: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = stat^α over the last dimension, normalised so that max(s)·min(s) = 1."""
    s = stat.clamp(min=SCALE_FLOOR).pow(alpha)
    return s / (s.amax(-1, keepdim=True) * s.amin(-1, keepdim=True)).sqrt()


def scaled_fake_quant(w: torch.Tensor, s: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Q(W·diag(s))·diag(s)⁻¹ for `w` [B, out, in] and `s` [B or 1, in]: what the folded layer computes."""
    scaled = w * s[:, None, :]
    return rtn_quantize(scaled, spec).dequantize(w.dtype) / s[:, None, :]


@dataclass
class ScaleChoice:
    scales: torch.Tensor
    alpha: torch.Tensor
    loss: torch.Tensor


def search_scales(
    stat: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], settings: AWQConfig
) -> ScaleChoice:
    """Best α per member for statistics `stat` [B, D]; `loss(s [B, D])` returns the error per member [B].

    Ties keep the smaller α, so a member with no calibration tokens (loss 0 everywhere)
    keeps s = 1 when α = 0 is on the grid.
    """
    best_s = best_alpha = best_loss = None
    for alpha in settings.alphas():
        s = scales_from_stat(stat, alpha)
        current = loss(s)
        if best_loss is None:
            best_s, best_loss = s, current
            best_alpha = torch.full_like(current, alpha)
            continue
        better = current < best_loss
        best_s = torch.where(better[:, None], s, best_s)
        best_loss = torch.where(better, current, best_loss)
        best_alpha = torch.where(better, torch.full_like(current, alpha), best_alpha)
    assert best_s is not None and best_loss is not None and best_alpha is not None
    return ScaleChoice(best_s, best_alpha, best_loss)


def _grouped(t: torch.Tensor, group: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], t.shape[-1] // group, group)


def _partial_errors(delta: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t (Σ_k δ_{r,g,k} x_{t,g,k})² per (row, group) for `delta` [out, G, g], `x` [T, G, g]."""
    rows = max(1, ROW_CHUNK_ELEMENTS // max(1, delta.shape[1] * x.shape[0]))
    parts = []
    for start in range(0, delta.shape[0], rows):
        partial = torch.einsum("ogk,tgk->ogt", delta[start : start + rows], x)
        parts.append((partial.square() * weight).sum(-1))
    return torch.cat(parts)


def clip_member(
    w: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    incumbent: tuple[torch.Tensor, torch.Tensor],
    spec: GridSpec,
    settings: AWQConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, zero [out, G], error [out, G]) for one weight `w` [out, in] seen by tokens `x` [T, in].

    `incumbent` is the grid RTN fits to `w` (method §5); it stays unless a shrink ratio beats it.
    """
    group = spec.group_of(w.shape[-1])
    wg = _grouped(w.float(), group)
    xg = _grouped(x.float(), group)
    weight = weight.float()
    scale, zero = incumbent
    best = _partial_errors(wg - fake_quantize(wg, scale[..., None], zero[..., None], spec.maxq), xg, weight)
    xmin = wg.amin(dim=-1).clamp(max=0)
    xmax = wg.amax(dim=-1).clamp(min=0)
    steps = int(round((1 - settings.awq_clip_maxshrink) * settings.awq_clip_grid))
    for step in range(steps + 1):
        ratio = 1 - step / settings.awq_clip_grid
        s, z = params_from_range(ratio * xmin, ratio * xmax, spec)
        err = _partial_errors(wg - fake_quantize(wg, s[..., None], z[..., None], spec.maxq), xg, weight)
        better = err < best
        best = torch.where(better, err, best)
        scale = torch.where(better, s, scale)
        zero = torch.where(better, z, zero)
    return scale, zero, best


@dataclass
class ClipResult:
    weight: QuantizedWeight
    loss: torch.Tensor
    starved: torch.Tensor


def clip_and_quantize(
    w: torch.Tensor,
    inputs: list[torch.Tensor | None],
    weights: list[torch.Tensor | None],
    spec: GridSpec,
    settings: AWQConfig,
) -> ClipResult:
    """Quantize `w` [B, out, in] with AWQ's clip search per member; members without inputs get RTN.

    `loss` [B] is the chosen Σ over (row, group) of the weighted partial-output error
    (NaN for RTN members), i.e. the output SSE of the member when per-channel.
    """
    members = w.shape[0]
    scale, zero = fit_grid(w, spec)
    loss = torch.full((members,), float("nan"), dtype=torch.float64)
    starved = torch.zeros(members, dtype=torch.bool)
    for member in range(members):
        x, weight = inputs[member], weights[member]
        if x is None or weight is None or x.shape[0] == 0:
            starved[member] = True
            continue
        pick = evenly(x.shape[0], settings.awq_clip_tokens, x.device)
        s, z, err = clip_member(w[member], x[pick], weight[pick], (scale[member], zero[member]), spec, settings)
        scale[member], zero[member] = s, z
        loss[member] = float(err.double().sum())
    return ClipResult(quantize(w, scale, zero, spec.wbits, spec.sym), loss, starved)
