"""The expert-balance metric σ (method §1) and the routing counts it is computed from.

Counts always come from the adapter's own routing (observed with `capture_routing`), so σ
measures what the model's experts actually receive, with no second copy of any router.
"""

from __future__ import annotations

import torch


def routed_counts(
    records: dict[int, list[tuple[torch.Tensor, torch.Tensor]]], layer_indices: list[int], rows: int, num_experts: int
) -> torch.Tensor:
    """Top-k selection counts [rows, moe_layers, E] from one forward of `rows` equal-length rows.

    `records` is what `capture_routing` collected; its ids are [rows·T, k] in row-major order.
    """
    counts = torch.zeros(rows, len(layer_indices), num_experts, dtype=torch.long)
    for slot, index in enumerate(layer_indices):
        ids = torch.cat([ids for ids, _ in records[index]]).to("cpu", torch.long).reshape(rows, -1)
        counts[:, slot].scatter_add_(1, ids, torch.ones_like(ids))
    return counts


def expert_usage(counts: torch.Tensor) -> torch.Tensor:
    """Frequencies u_l^e: each layer's counts over its total selections ([..., layers, E])."""
    counts = counts.to(torch.float64)
    return counts / counts.sum(dim=-1, keepdim=True).clamp_min(1.0)


def layer_sigma(counts: torch.Tensor) -> torch.Tensor:
    """σ_l: sample standard deviation (ddof = 1) of the expert frequencies of each layer."""
    return expert_usage(counts).std(dim=-1, correction=1)


def sigma(counts: torch.Tensor) -> torch.Tensor:
    """σ(D): the mean of σ_l over the MoE layers (`counts` holds MoE layers only)."""
    return layer_sigma(counts).mean(dim=-1)
