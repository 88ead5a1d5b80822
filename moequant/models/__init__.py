"""The adapter layer: the only place that knows a MoE family's module names.

`adapt(model)` finds the MoE structure of any family from its modules and returns a
`ModelAdapter` whose views read and write the live model in place.
"""

from __future__ import annotations

from torch import nn

from moequant.errors import UsageError
from moequant.models.base import (
    PROJECTIONS,
    Attention,
    DecoderLayer,
    DenseMLP,
    ExpertBank,
    ModelAdapter,
    MoEBlock,
    Router,
    forwards_replaced,
)
from moequant.models.discover import ATTENTION_READERS, Unsupported, discover

EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


def check_model_type(config: object) -> None:
    """Refuse, before any weight is read, a config that describes no Mixture-of-Experts model."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not any(getattr(text, key, None) for key in EXPERT_COUNT_KEYS):
        model_type = getattr(config, "model_type", None)
        raise UsageError(f"model_type {model_type!r} has no experts in its config; moequant quantizes Mixture-of-Experts models")


def adapt(model: nn.Module) -> ModelAdapter:
    """The family-neutral view of `model`, found from its structure (see `discover`)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        adapter = discover(model, str(model_type))
    except Unsupported as err:
        raise UsageError(f"model_type {model_type!r} is not supported: {err}") from None
    if not adapter.moe_layers:
        raise UsageError(f"model of type {model_type!r} has no MoE layers; moequant quantizes Mixture-of-Experts models")
    return adapter


__all__ = [
    "PROJECTIONS",
    "Attention",
    "DecoderLayer",
    "DenseMLP",
    "ExpertBank",
    "ModelAdapter",
    "MoEBlock",
    "Router",
    "adapt",
    "check_model_type",
]
