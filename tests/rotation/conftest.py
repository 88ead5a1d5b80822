"""Rotation fixtures: exactness helpers shared by the rotation tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _norm_eps(module: nn.Module) -> float | None:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    weight = getattr(module, "weight", None)
    if eps is None or not isinstance(weight, nn.Parameter) or weight.dim() != 1 or isinstance(module, nn.Embedding):
        return None
    return float(eps)


def norms_in_input_dtype(model: nn.Module) -> nn.Module:
    """transformers' RMSNorms compute in float32 even for float64 inputs; float64 exactness
    checks need them in the input's dtype, or float32 rounding (≈1e-7) hides the rotation's error."""
    for module in model.modules():
        eps = _norm_eps(module)
        if eps is not None:
            module.forward = lambda x, m=module, e=eps: m.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e)
    return model


@pytest.fixture
def input_ids() -> torch.Tensor:
    return torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(7))
