"""Applying a Hadamard matrix in O(n log n) without materialising it.

`hadamard_transform(x)` computes x · H along the last dimension, H being exactly
`hadamard.hadamard_matrix(n)`. The Sylvester part runs either as a pure-torch butterfly
(any device, any dtype including float64) or through the `fast_hadamard_transform` CUDA
kernel when it is importable; `resolve_backend` says which one a call will use, so
callers can record it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import lru_cache

import torch

from moequant.errors import UsageError
from moequant.rotation.hadamard import base_factor, plan

TORCH = "torch"
CUDA_KERNEL = "fast_hadamard_transform"
BACKENDS = ("auto", TORCH, CUDA_KERNEL)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@lru_cache(maxsize=1)
def cuda_kernel_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("fast_hadamard_transform") is not None


def resolve_backend(requested: str, x: torch.Tensor) -> str:
    """The backend a transform of `x` runs on: the CUDA kernel only for CUDA tensors it supports."""
    if requested not in BACKENDS:
        raise UsageError(f"unknown Hadamard backend {requested!r}; allowed: {', '.join(BACKENDS)}")
    usable = x.is_cuda and x.dtype in _KERNEL_DTYPES and cuda_kernel_available()
    if requested == CUDA_KERNEL and not usable:
        raise UsageError(
            f"Hadamard backend {CUDA_KERNEL!r} needs the package on a CUDA device and a float32/16 tensor "
            f"(got {x.dtype} on {x.device})"
        )
    if requested == "auto":
        return CUDA_KERNEL if usable else TORCH
    return requested


def walsh_hadamard(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised natural-order Walsh–Hadamard transform of the last dimension (a power of two)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"last dimension {n} is not a power of two")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    half = 1
    while half < n:
        pairs = y.reshape(-1, n // (2 * half), 2, half)
        y = torch.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]), dim=2).reshape(-1, n)
        half *= 2
    return y.reshape(*lead, n)


def _sylvester_part(x: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == CUDA_KERNEL and x.shape[-1] > 1:
        from fast_hadamard_transform import hadamard_transform as kernel

        return kernel(x.contiguous(), 1.0)
    return walsh_hadamard(x)


def hadamard_transform(x: torch.Tensor, transpose: bool = False, backend: str = "auto") -> torch.Tensor:
    """x · H (or x · Hᵀ) along the last dimension, H = (H_m ⊗ H_{2^k}) / √n orthogonal."""
    spec = plan(x.shape[-1])
    chosen = resolve_backend(backend, x)
    lead = x.shape[:-1]
    blocks = _sylvester_part(x.reshape(-1, spec.base, spec.power), chosen)
    if spec.base > 1:
        factor = base_factor(spec.base, dtype=x.dtype, device=x.device)
        blocks = torch.einsum("tap,ac->tcp", blocks, factor.t() if transpose else factor)
    return (blocks / spec.size**0.5).reshape(*lead, spec.size)


ROW_BLOCK = 8192


@torch.no_grad()
def transform_rows(weight: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """weight[i] ← fn(weight[i]) computed in float64 a block of rows at a time, written back in place.

    Blocks bound the float64 temporary (a 150k-row lm_head would need gigabytes at once).
    """
    for start in range(0, weight.shape[0], ROW_BLOCK):
        block = weight[start : start + ROW_BLOCK]
        block.copy_(fn(block.double()).to(weight.dtype))
