"""The adapter layer: the only place that knows a MoE family's module names.

`adapt(model)` dispatches on `config.model_type` and returns a `ModelAdapter` whose views
read and write the live model in place.
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
)
from moequant.models.families import FAMILIES

SUPPORTED_MODEL_TYPES = tuple(sorted(FAMILIES))


def check_model_type(model_type: str | None) -> None:
    if model_type not in FAMILIES:
        raise UsageError(
            f"model_type {model_type!r} is not a supported MoE family; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def adapt(model: nn.Module) -> ModelAdapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    check_model_type(model_type)
    adapter = FAMILIES[model_type].adapt(model)
    if not adapter.moe_layers:
        raise UsageError(f"model of type {model_type!r} has no MoE layers; moequant quantizes Mixture-of-Experts models")
    return adapter


__all__ = [
    "PROJECTIONS",
    "SUPPORTED_MODEL_TYPES",
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
