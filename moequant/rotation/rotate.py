"""QuaRot-style rotation of the residual stream: the same function, outlier-free weights.

With every norm folded, the residual stream h can be replaced by hQ for one orthogonal Q:
embeddings become E·Q, every reader W·Q and every writer Qᵀ·W, so each layer sees exactly
the activations it saw before. LayerNorm models need two more steps (SliceGPT's): the
embeddings and writers are first centred, h ← h·(I − 11ᵀ/n), which no LayerNorm can see,
so the stream stays mean-free; and Q is made to map the all-ones direction to itself, so
a mean-free stream stays mean-free after rotation and each LayerNorm computes what an RMS
normalisation would. All arithmetic is float64 on one weight at a time (row
blocks for the big ones) and written back in place, each tensor in its own dtype (a router
kept in float32 inside a bf16 model stays float32): no second copy of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from moequant import __version__
from moequant.errors import UsageError
from moequant.models import DecoderLayer, DenseMLP, ModelAdapter, adapt
from moequant.rotation.config import RotationConfig
from moequant.progress import each
from moequant.rotation.fuse import (
    NormReaders,
    check_layer_norms,
    check_norm,
    check_norms,
    final_norm_readers,
    layer_norm_readers,
)
from moequant.rotation.hadamard import plan, random_signs
from moequant.rotation.online import down_projections, fold_online_hadamard, install_online_hadamard
from moequant.rotation.transform import TORCH, hadamard_transform, transform_rows

def untie_lm_head(adapter: ModelAdapter) -> bool:
    """Give lm_head its own weight when it shares the embedding's (E·Q and W·Q differ after fusion)."""
    head, embed = adapter.lm_head.weight, adapter.embed_tokens.weight
    if head is not embed and head.data_ptr() != embed.data_ptr():
        return False
    adapter.lm_head.weight = nn.Parameter(embed.detach().clone(), requires_grad=embed.requires_grad)
    adapter.model.config.tie_word_embeddings = False
    return True


def layer_residual_writers(layer: DecoderLayer) -> Iterator[nn.Linear | torch.Tensor]:
    """Every linear (or [H, in] weight view) of one decoder layer that adds into the residual stream."""
    yield from layer.attention.writers.values()
    mlp = layer.mlp
    if isinstance(mlp, DenseMLP):
        yield mlp.down
        return
    yield from (mlp.experts.weight("down", e) for e in range(mlp.experts.num_experts))
    yield from (shared.down for shared in mlp.shared_experts)


def residual_writers(adapter: ModelAdapter) -> Iterator[nn.Linear | torch.Tensor]:
    for layer in adapter.layers:
        yield from layer_residual_writers(layer)


class ResidualRotation:
    """The random orthogonal Q = diag(s)·H of one hidden size, applied without materialising it.

    With `centred` (LayerNorm models) Q is followed by the Householder reflection F that
    maps u·diag(s)·H back to u = 1/√n, so u·Q·F = u and (QF)·1ᵀ = 1ᵀ: mean-free rows stay
    mean-free. F changes one direction, so QF spreads outliers as Q does.
    """

    def __init__(self, hidden_size: int, seed: int, centred: bool = False) -> None:
        self.plan = plan(hidden_size)
        self.signs = random_signs(hidden_size, seed)
        self.centred = centred
        self.mirror: torch.Tensor | None = None
        if centred:
            ones = torch.full((hidden_size,), hidden_size**-0.5, dtype=torch.float64)
            mirror = self._hadamard(ones[None])[0] - ones
            if mirror.norm() > 1e-12:
                self.mirror = mirror / mirror.norm()

    def _hadamard(self, rows: torch.Tensor) -> torch.Tensor:
        return hadamard_transform(rows * self.signs.to(rows.device), backend=TORCH)

    def right(self, rows: torch.Tensor) -> torch.Tensor:
        """rows · Q (rows · Q · F when centred)."""
        rotated = self._hadamard(rows)
        if self.mirror is None:
            return rotated
        mirror = self.mirror.to(rotated.device, rotated.dtype)
        return rotated - 2 * (rotated @ mirror)[..., None] * mirror

    def residual(self, rows: torch.Tensor) -> torch.Tensor:
        """What a vector added into the residual stream becomes: rows·Q, centred first for LayerNorm models."""
        if self.centred:
            rows = rows - rows.mean(-1, keepdim=True)
        return self.right(rows)

    def matrix(self) -> torch.Tensor:
        return self.right(torch.eye(self.plan.size, dtype=torch.float64))

    def rotate_embeddings(self, weight: torch.Tensor) -> None:
        transform_rows(weight, self.residual)

    def fold_and_rotate(self, group: NormReaders) -> int:
        """W·diag(g)·Q for every reader of one norm in a single float64 pass, then gain g ← 1.

        One pass means one rounding: a bf16 or fp16 weight is written back once, not once
        for the fold and again for the rotation. A LayerNorm's bias b stays in the norm as
        (b / g)·Q, which the folded readers map back to b·Wᵀ. Returns the number of readers rotated.
        """
        form = check_norm(group.norm, group.where, group.norm.weight.shape[0])
        scale = form.offset + group.norm.weight.data.double()
        bias = getattr(group.norm, "bias", None)
        if isinstance(bias, torch.Tensor):
            lost = (scale == 0) & (bias.data.double() != 0)
            if bool(lost.any()):
                channel = int(lost.nonzero()[0])
                raise UsageError(
                    f"rotation folds a LayerNorm's gain into its readers, but {group.where} has gain 0 and a "
                    f"non-zero bias in channel {channel}; it is refused rather than applied approximately"
                )
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)
            bias.data.copy_(self.right((bias.data.double() / safe)[None])[0].to(bias.dtype))
        for weight in group.readers:
            transform_rows(weight, lambda rows: self.right(rows * scale.to(rows.device)))
        group.norm.weight.data.fill_(1.0 - form.offset)
        return len(group.readers)

    def rotate_writer(self, linear: nn.Linear | torch.Tensor) -> None:
        """Qᵀ·W for W [H, in]: the columns of W are rotated, i.e. rows of Wᵀ times Q."""
        weight = linear.weight.data if isinstance(linear, nn.Linear) else linear
        transform_rows(weight.t(), self.residual)
        bias = linear.bias if isinstance(linear, nn.Linear) else None
        if bias is not None:
            transform_rows(bias.data[None], self.residual)


def _check_sizes(adapter: ModelAdapter, config: RotationConfig) -> None:
    """Fail before touching any weight when a needed Hadamard size has no construction."""
    plan(adapter.embed_tokens.weight.shape[1])
    if config.online_hadamard:
        for down in down_projections(adapter):
            plan(down.shape[1])


class LayerStream(Protocol):
    """Where decoder layers come from and go to when the model is rotated one layer at a time."""

    def load(self, layer: DecoderLayer) -> None: ...

    def store(self, layer: DecoderLayer) -> None: ...


@torch.no_grad()
def rotate_model(
    model: nn.Module, config: RotationConfig | None = None, stream: LayerStream | None = None
) -> dict[str, object]:
    """Fuse norms and rotate `model` in place; returns what was done (for the metadata).

    With a `stream` each decoder layer is loaded just before it is rotated and stored right
    after; every layer is rotated on its own (Q acts on the residual stream between
    layers), so the result is the same as rotating the resident model.
    """
    config = config or RotationConfig()
    adapter = adapt(model)
    if stream is not None and config.online_hadamard:
        raise UsageError("--online-hadamard folds into every layer after the rotation; it cannot be streamed yet")
    centred = check_norms(adapter)
    _check_sizes(adapter, config)
    untied = untie_lm_head(adapter)
    hidden = adapter.embed_tokens.weight.shape[1]
    rotation = ResidualRotation(hidden, config.seed, centred)
    rotation.rotate_embeddings(adapter.embed_tokens.weight.data)
    norms = readers = writers = 0
    for layer in each(adapter.layers, "rotate", "layer"):
        if stream is not None:
            stream.load(layer)
            check_layer_norms(layer, hidden, centred)
        for group in layer_norm_readers(layer):
            readers += rotation.fold_and_rotate(group)
            norms += 1
        for writer in layer_residual_writers(layer):
            rotation.rotate_writer(writer)
            writers += 1
        if layer.is_moe and layer.mlp.experts.bias("down") is not None:
            # biased experts (gpt-oss) add b_e to the residual too: b_e ← b_e·Q
            transform_rows(layer.mlp.experts.bias("down"), rotation.residual)
        if stream is not None:
            stream.store(layer)
    readers += rotation.fold_and_rotate(final_norm_readers(adapter))
    norms += 1
    report: dict[str, object] = {
        "moequant_version": __version__,
        "family": adapter.family,
        "config": config.to_dict(),
        "seed": config.seed,
        "hidden_size": hidden,
        "hadamard": rotation.plan.describe(),
        "transform": f"{TORCH} (float64)",
        "norms_fused": norms,
        "embeddings_rotated": True,
        "residual_centred": centred,
        "readers_rotated": readers,
        "writers_rotated": writers,
        "untied_lm_head": untied,
        "online_hadamard": None,
    }
    if config.online_hadamard:
        report["online_hadamard"] = fold_online_hadamard(adapter)
        install_online_hadamard(adapter, config.backend)
    return report
