"""The paper's models at their published shapes, or proportionally narrowed for a CPU run.

Scaling divides every width (hidden, intermediate sizes, head counts, MLA ranks, vocabulary)
by the same factor and keeps what decides the algorithm's structure: the expert count,
top-k, shared experts, head dimensions, dense first layers. A narrowed model therefore runs
the same code paths with the same number of solves and column loops per projection, only
on smaller matrices, so ratios measured on it (measured against floor, batched against
reference) carry over in kind, not in value.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models.synthetic import PAPER_SHAPES, full_layer_count, paper_shape_model

SCALED_KEYS = (
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "kv_lora_rank",
    "vocab_size",
)

HEAD_KEYS = ("num_attention_heads", "num_key_value_heads")

BUILT_LAYERS = {"mixtral-8x7b": 1, "deepseek-moe-16b": 2, "qwen1.5-moe-a2.7b": 1}
"""Layers built per shape: one MoE layer, plus DeepSeek's dense layer 0 so both kinds are timed."""


def shape_names() -> tuple[str, ...]:
    return tuple(PAPER_SHAPES)


def scaled_overrides(name: str, scale: int) -> dict[str, Any]:
    if name not in PAPER_SHAPES:
        raise UsageError(f"unknown shape {name!r}; available: {', '.join(PAPER_SHAPES)}")
    if scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale}")
    values = PAPER_SHAPES[name][1]
    if scale == 1:
        return {}
    return {key: _narrow(key, int(values[key]), scale) for key in SCALED_KEYS if key in values}


def _narrow(key: str, value: int, scale: int) -> int:
    """Head counts divide plainly; widths stay multiples of 8 (grouped_mm needs 16-byte strides)."""
    if key in HEAD_KEYS:
        return max(1, value // scale)
    return max(8, value // scale // 8 * 8)


def default_layers(name: str) -> int:
    return BUILT_LAYERS[name]


def build(name: str, layers: int, scale: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """The shape with `layers` decoder layers; the last built layer must be a MoE layer to project from."""
    overrides = scaled_overrides(name, scale)
    first_dense = int(PAPER_SHAPES[name][1].get("first_k_dense_replace", 0))
    if layers <= first_dense:
        raise UsageError(f"{name} needs at least {first_dense + 1} layers so a MoE layer is built")
    return paper_shape_model(name, num_layers=layers, seed=seed, dtype=dtype, **overrides)


def full_layers(name: str) -> int:
    return full_layer_count(name)


def config_summary(model: nn.Module) -> dict[str, Any]:
    config = model.config
    keys = (*SCALED_KEYS, "num_hidden_layers", "num_local_experts", "num_experts", "n_routed_experts",
            "n_shared_experts", "num_experts_per_tok", "first_k_dense_replace")
    return {key: getattr(config, key) for key in keys if getattr(config, key, None) is not None}
