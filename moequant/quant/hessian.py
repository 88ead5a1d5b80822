"""Hessian accumulators for GPTQ: H_b = Σ_i w_i x_i x_iᵀ over the tokens reaching member b.

A stack of B matrices serves both a plain linear (B = 1) and all experts of a projection
(B = E). Without weights this is GPTQ's H; with weights it is AGQ's affinity-weighted H
(w = routing coefficient c, or c²). Sums stay unnormalised: GPTQ's damping is relative
to mean(diag H), so only the direction of H matters to the solver, and the raw sums are
what the per-expert report and the tests compare against.
"""

from __future__ import annotations

import torch

from moequant.errors import UsageError


class HessianStack:
    def __init__(self, members: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.H = torch.zeros(members, dim, dim, dtype=dtype, device=device)
        self.tokens = torch.zeros(members, dtype=torch.long)
        self.mass = torch.zeros(members, dtype=torch.float64)

    @property
    def members(self) -> int:
        return self.H.shape[0]

    def add(
        self, member: int, x: torch.Tensor, weight: torch.Tensor | None = None, coeff: torch.Tensor | None = None
    ) -> None:
        """Accumulate tokens `x` [T, dim], weighted in H by `weight` [T] when given, into `member`.

        `mass` sums `coeff` (the routing coefficients, whether or not they weight H), so
        the report shows how much each expert matters even under plain GPTQ.
        """
        if x.shape[0] == 0:
            return
        x = x.reshape(-1, x.shape[-1]).to(self.H.dtype)
        weighted = x if weight is None else x * weight.reshape(-1, 1).to(self.H.dtype)
        self.H[member].addmm_(weighted.t(), x)
        self.tokens[member] += x.shape[0]
        counted = coeff if coeff is not None else weight
        self.mass[member] += float(x.shape[0]) if counted is None else float(counted.double().sum())

    def check_finite(self, where: str) -> None:
        if not bool(torch.isfinite(self.H).all()):
            raise UsageError(f"{where}: the Hessian holds NaN/Inf (activations overflow {self.H.dtype})")


def check_finite_activations(x: torch.Tensor, where: str) -> None:
    """A finite sum is the cheap common case; only a non-finite one pays for the full check."""
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise UsageError(f"{where}: calibration activations hold NaN/Inf")
