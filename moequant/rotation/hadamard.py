"""Orthogonal Hadamard matrices of any size that is a known Hadamard order times 2^k.

A size n is planned as n = m · 2^k with the smallest base order m that a construction in
`constructions` builds; the normalised matrix is (H_m ⊗ H_{2^k}) / √n, which is what the
fast transform computes without materialising it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from moequant.errors import UsageError
from moequant.rotation.constructions import base_matrix, construction_name

MAX_BASE_ORDER = 1024


@dataclass(frozen=True)
class HadamardPlan:
    """How an orthogonal Hadamard matrix of `size` is built: base ⊗ Sylvester(power)."""

    size: int
    base: int
    power: int
    construction: str

    def describe(self) -> str:
        if self.base == 1:
            return f"sylvester({self.size})"
        return f"{self.construction} x sylvester({self.power})"


@lru_cache(maxsize=None)
def plan(size: int) -> HadamardPlan:
    """The decomposition of `size`; UsageError (naming the size) when none is known."""
    if not isinstance(size, int) or size < 1:
        raise UsageError(f"Hadamard size must be a positive integer, got {size!r}")
    odd, power = size, 1
    while odd % 2 == 0:
        odd //= 2
        power *= 2
    base = odd
    while base <= min(size, MAX_BASE_ORDER):
        name = construction_name(base)
        if name is not None:
            return HadamardPlan(size, base, size // base, name)
        base *= 2
    raise UsageError(
        f"no Hadamard construction for size {size} (= {odd}·2^{power.bit_length() - 1}); supported: "
        "powers of two times a Paley I/II or Goethals–Seidel order "
        "such as 12, 20, 28, 36, 44, 52, 60, 108, 140, 156, 172"
    )


def is_supported(size: int) -> bool:
    try:
        plan(size)
    except UsageError:
        return False
    return True


def sylvester(power: int) -> torch.Tensor:
    """Unnormalised natural-order Walsh–Hadamard matrix of a power-of-two order."""
    if power < 1 or power & (power - 1):
        raise ValueError(f"{power} is not a power of two")
    matrix = torch.ones(1, 1, dtype=torch.float64)
    step = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while matrix.shape[0] < power:
        matrix = torch.kron(matrix, step)
    return matrix


@lru_cache(maxsize=None)
def _base_tensor(order: int) -> torch.Tensor:
    return torch.from_numpy(base_matrix(order).copy()).to(torch.float64)


def base_factor(
    order: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The unnormalised ±1 base matrix H_m (rows orthogonal, HHᵀ = mI)."""
    return _base_tensor(order).to(dtype=dtype, device=device)


def hadamard_matrix(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The explicit orthogonal matrix (H_m ⊗ H_{2^k}) / √n: reference for tests and small sizes."""
    spec = plan(size)
    matrix = torch.kron(_base_tensor(spec.base), sylvester(spec.power)) / spec.size**0.5
    return matrix.to(dtype)


def random_signs(size: int, seed: int) -> torch.Tensor:
    """Seeded ±1 diagonal (float64); the same (size, seed) always gives the same signs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (size,), generator=generator).to(torch.float64) * 2 - 1
