"""Folding RMSNorm weights into the linears that read them, so the norms become rotation-invariant.

RMSNorm(xQ) = RMSNorm(x)·Q only when the norm has no per-channel gain, no bias and no
mean subtraction; after folding, every residual-stream norm is a bare RMS normalisation
(gain 1: weight 1, or weight 0 for the (1 + weight) form).
Norms inside attention (q/k norms, MLA's q_a/kv_a norms) read projections, not the residual
stream, and are deliberately left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import DecoderLayer, DenseMLP, ModelAdapter
from moequant.models.norms import gain_offset


@dataclass
class NormReaders:
    """One residual-stream norm and the weights that read its output ([out, H] each, views)."""

    where: str
    norm: nn.Module
    readers: list[torch.Tensor]


def _mlp_readers(mlp: object) -> list[torch.Tensor]:
    if isinstance(mlp, DenseMLP):
        return [mlp.gate.weight.data, mlp.up.weight.data]
    views = [mlp.router.linear_weight.data]
    for proj in ("gate", "up"):
        views.extend(mlp.experts.weight(proj, e) for e in range(mlp.experts.num_experts))
    for shared in mlp.shared_experts:
        views.extend((shared.gate.weight.data, shared.up.weight.data))
    if mlp.shared_gate is not None:
        views.append(mlp.shared_gate.weight.data)
    return views


def layer_norm_readers(layer: DecoderLayer) -> list[NormReaders]:
    """The two residual-stream norms of one decoder layer with the weights that read them."""
    attention = [linear.weight.data for linear in layer.attention.readers.values()]
    return [
        NormReaders(f"layer {layer.index} input norm", layer.input_norm, attention),
        NormReaders(f"layer {layer.index} post-attention norm", layer.post_attention_norm, _mlp_readers(layer.mlp)),
    ]


def final_norm_readers(adapter: ModelAdapter) -> NormReaders:
    return NormReaders("final norm", adapter.final_norm, [adapter.lm_head.weight.data])


def norm_readers(adapter: ModelAdapter) -> list[NormReaders]:
    """Every residual-stream norm of the model with all the weights that read it."""
    groups = [group for layer in adapter.layers for group in layer_norm_readers(layer)]
    return [*groups, final_norm_readers(adapter)]


def _reject(norm: nn.Module, where: str, why: str) -> UsageError:
    return UsageError(
        f"rotation needs RMSNorm-like norms (weight only, no bias, no mean subtraction); "
        f"{type(norm).__name__} ({where}) {why}"
    )


def check_rms_norm(norm: nn.Module, where: str, hidden_size: int) -> float:
    """The norm's gain offset (`models.norms.gain_offset`); a one-line UsageError for any other norm.

    The check is behavioural, so LayerNorm and biased norms are caught whatever their class is called.
    """
    params = dict(norm.named_parameters())
    weight = params.get("weight")
    if set(params) != {"weight"} or weight is None or tuple(weight.shape) != (hidden_size,):
        names = ", ".join(sorted(params)) or "none"
        raise _reject(norm, where, f"has parameters [{names}]")
    offset, error = gain_offset(norm, hidden_size)
    if offset is None:
        raise _reject(norm, where, f"computes neither weight * x / rms(x) nor (1 + weight) * x / rms(x) (relative deviation {error:.2g})")
    return offset


def check_norms(adapter: ModelAdapter) -> None:
    """Every resident norm; a streamed layer's norms are checked when the layer is loaded (`check_layer_norms`)."""
    adapter.check_foldable("rotation")
    hidden = adapter.embed_tokens.weight.shape[1]
    for group in norm_readers(adapter):
        if all(p.device.type != "meta" for p in group.norm.parameters()):
            check_rms_norm(group.norm, group.where, hidden)


def check_layer_norms(layer: DecoderLayer, hidden_size: int) -> None:
    for group in layer_norm_readers(layer):
        check_rms_norm(group.norm, group.where, hidden_size)
