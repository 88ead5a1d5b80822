"""Hessian accumulators for GPTQ: H_b = Σ_i w_i x_i x_iᵀ over the tokens reaching member b.

A stack of B matrices serves both a plain linear (B = 1) and all experts of a projection
(B = E). Without weights this is GPTQ's H; with weights it is AGQ's affinity-weighted H
(w = routing coefficient c, or c²). Sums stay unnormalised: GPTQ's damping is relative
to mean(diag H), so only the direction of H matters to the solver, and the raw sums are
what the per-expert report and the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moequant.errors import UsageError


@dataclass(frozen=True)
class MemberGroups:
    """The (token, slot) pairs routed to each member, sorted by member in one pass.

    Within a member the pairs keep token-then-slot order, the order `torch.where(ids == m)`
    gives, so each member sees its tokens exactly as a per-member loop would.
    """

    token: torch.Tensor
    slot: torch.Tensor
    member: torch.Tensor
    sizes: list[int]

    @classmethod
    def of(cls, ids: torch.Tensor, members: int) -> MemberGroups:
        """Groups of the top-k ids [T, k]; ids outside 0..members−1 belong to no member."""
        flat = ids.reshape(-1)
        flat = torch.where((flat >= 0) & (flat < members), flat, members)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=members + 1)[:members]
        sizes = counts.tolist()
        order = order[: sum(sizes)]
        return cls(order // ids.shape[-1], order % ids.shape[-1], flat[order], sizes)

    def laid_out(self) -> MemberGroups:
        """The same groups over rows already in group order (row i is pair i), such as the
        per-member outputs of the grouped tokens."""
        return MemberGroups(torch.arange(len(self.token), device=self.token.device), self.slot, self.member, self.sizes)


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

    def add_grouped(
        self, x: torch.Tensor, groups: MemberGroups, weight: torch.Tensor | None = None, coeff: torch.Tensor | None = None
    ) -> None:
        """`add` for every member at once: member m's rows are `x[groups.token]` over m's slice.

        `weight` and `coeff` are per pair, in the groups' order. Each member's rows are gathered
        and accumulated with the very `addmm_` that `add` issues, right after the gather while
        they are in cache, so H is bit for bit the per-member loop's; what is gone is the
        per-member search for its tokens and the host sync per member (token and mass counts
        are bookkept for all members in one step). A padded batched matmul or a grouped matmul
        would drop the remaining Python step per member but changes how the sums are
        blocked, hence their rounding (bench/hessian_grouping.py measures both).
        """
        x = x.reshape(-1, x.shape[-1])
        scale = None if weight is None else weight.reshape(-1, 1).to(self.H.dtype)
        start = 0
        for member, size in enumerate(groups.sizes):
            if size:
                rows = x[groups.token[start : start + size]].to(self.H.dtype)
                weighted = rows if scale is None else rows * scale[start : start + size]
                self.H[member].addmm_(weighted.t(), rows)
            start += size
        sizes = torch.tensor(groups.sizes)
        self.tokens += sizes
        counted = coeff if coeff is not None else weight
        if counted is None:
            self.mass += sizes.double()
        else:
            self.mass.index_add_(0, groups.member.cpu(), counted.reshape(-1).double().cpu())

    def check_finite(self, where: str) -> None:
        if not bool(torch.isfinite(self.H.sum())) and not bool(torch.isfinite(self.H).all()):
            raise UsageError(f"{where}: the Hessian holds NaN/Inf (activations overflow {self.H.dtype})")


def check_finite_activations(x: torch.Tensor, where: str) -> None:
    """A finite sum is the cheap common case; only a non-finite one pays for the full check."""
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise UsageError(f"{where}: calibration activations hold NaN/Inf")
