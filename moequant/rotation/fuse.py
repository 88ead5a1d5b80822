"""Folding norm gains into the linears that read them, so the norms become rotation-invariant.

RMSNorm(xQ) = RMSNorm(x)·Q only when the norm has no per-channel gain; after folding,
every residual-stream RMS norm is a bare RMS normalisation (gain 1: weight 1, or weight 0
for the (1 + weight) form). LayerNorm commutes with Q only on a mean-free residual stream
and a Q that keeps the mean-free subspace (`rotate.ResidualRotation` arranges both); its
gain folds into the readers and its bias stays in the norm, rotated.
Norms inside attention (q/k norms, MLA's q_a/kv_a norms) read projections, not the residual
stream, and are deliberately left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import DecoderLayer, DenseMLP, ModelAdapter
from moequant.models.norms import NormForm, norm_form


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
        f"rotation needs RMSNorm or LayerNorm residual norms (a per-channel weight, a bias only with mean "
        f"subtraction); {type(norm).__name__} ({where}) {why}"
    )


def check_norm(norm: nn.Module, where: str, hidden_size: int) -> NormForm:
    """The norm's form (`models.norms.norm_form`); a one-line UsageError for any other norm.

    The check is behavioural, so an unusual norm is caught whatever its class is called.
    """
    params = dict(norm.named_parameters())
    shapes_ok = all(tuple(p.shape) == (hidden_size,) for p in params.values())
    if not set(params) & {"weight"} or not set(params) <= {"weight", "bias"} or not shapes_ok:
        names = ", ".join(sorted(params)) or "none"
        raise _reject(norm, where, f"has parameters [{names}]")
    form, error = norm_form(norm, hidden_size)
    if form is None:
        raise _reject(
            norm, where,
            f"computes none of weight * x / rms(x), (1 + weight) * x / rms(x), weight * (x - mean) / std(x) + bias "
            f"(relative deviation {error:.2g})",
        )
    return form


def _check_one_kind(forms: dict[str, NormForm]) -> bool:
    """Whether the residual stream is centred: all norms subtract the mean, or none does."""
    kinds = {form.centred for form in forms.values()}
    if len(kinds) > 1:
        centred = next(where for where, form in forms.items() if form.centred)
        plain = next(where for where, form in forms.items() if not form.centred)
        raise UsageError(
            f"rotation needs every residual-stream norm to subtract the mean or none to: {centred} is a "
            f"LayerNorm, {plain} an RMS norm"
        )
    return kinds.pop()


def check_norms(adapter: ModelAdapter) -> bool:
    """Every resident norm (a streamed layer's are checked when it is loaded); returns whether they centre."""
    adapter.check_foldable("rotation")
    hidden = adapter.embed_tokens.weight.shape[1]
    forms = {
        group.where: check_norm(group.norm, group.where, hidden)
        for group in norm_readers(adapter)
        if all(p.device.type != "meta" for p in group.norm.parameters())
    }
    return _check_one_kind(forms)


def check_layer_norms(layer: DecoderLayer, hidden_size: int, centred: bool) -> None:
    forms = {group.where: check_norm(group.norm, group.where, hidden_size) for group in layer_norm_readers(layer)}
    if _check_one_kind(forms) != centred:
        raise UsageError(
            f"rotation needs every residual-stream norm to subtract the mean or none to: layer {layer.index}'s "
            f"norms {'do not' if centred else 'do'}, the model's other norms {'do' if centred else 'do not'}"
        )
