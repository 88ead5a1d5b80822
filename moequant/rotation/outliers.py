"""How spiky the weights are: the quantity rotation is meant to reduce.

The ratio max|w| / rms(w) of a weight matrix is what a per-channel quantizer's step size
pays for; it is summarised over every routed expert of every MoE layer per projection.
"""

from __future__ import annotations

import torch

from moequant.models import PROJECTIONS, ModelAdapter


def outlier_ratio(weight: torch.Tensor) -> float:
    w = weight.detach().double()
    return (w.abs().max() / w.pow(2).mean().sqrt()).item()


def expert_outlier_ratios(adapter: ModelAdapter) -> dict[str, dict[str, float]]:
    """Per projection: mean and max of max|w|/rms over all routed experts of all MoE layers."""
    summary = {}
    for proj in PROJECTIONS:
        ratios = torch.tensor(
            [
                outlier_ratio(layer.mlp.experts.weight(proj, e))
                for layer in adapter.moe_layers
                for e in range(layer.mlp.experts.num_experts)
            ],
            dtype=torch.float64,
        )
        summary[proj] = {"mean": ratios.mean().item(), "max": ratios.max().item()}
    return summary
