"""QuaRot-style rotation of the residual stream: the same function, outlier-free weights.

With every norm folded, the residual stream h can be replaced by hQ for one orthogonal Q:
embeddings become E·Q, every reader W·Q and every writer Qᵀ·W, so each layer sees exactly
the activations it saw before. All arithmetic is float64 on one weight at a time (row
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
    check_norms,
    check_rms_norm,
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
    """The random orthogonal Q = diag(s)·H of one hidden size, applied without materialising it."""

    def __init__(self, hidden_size: int, seed: int) -> None:
        self.plan = plan(hidden_size)
        self.signs = random_signs(hidden_size, seed)

    def right(self, rows: torch.Tensor) -> torch.Tensor:
        """rows · Q."""
        return hadamard_transform(rows * self.signs.to(rows.device), backend=TORCH)

    def matrix(self) -> torch.Tensor:
        return self.right(torch.eye(self.plan.size, dtype=torch.float64))

    def rotate_reader(self, weight: torch.Tensor) -> None:
        transform_rows(weight, self.right)

    def fold_and_rotate(self, group: NormReaders) -> int:
        """W·diag(g)·Q for every reader of one norm in a single float64 pass, then gain g ← 1.

        One pass means one rounding: a bf16 or fp16 weight is written back once, not once
        for the fold and again for the rotation. Returns the number of readers rotated.
        """
        offset = check_rms_norm(group.norm, group.where, group.norm.weight.shape[0])
        scale = offset + group.norm.weight.data.double()
        for weight in group.readers:
            transform_rows(weight, lambda rows: self.right(rows * scale.to(rows.device)))
        group.norm.weight.data.fill_(1.0 - offset)
        return len(group.readers)

    def rotate_writer(self, linear: nn.Linear | torch.Tensor) -> None:
        """Qᵀ·W for W [H, in]: the columns of W are rotated, i.e. rows of Wᵀ times Q."""
        weight = linear.weight.data if isinstance(linear, nn.Linear) else linear
        transform_rows(weight.t(), self.right)
        bias = linear.bias if isinstance(linear, nn.Linear) else None
        if bias is not None:
            transform_rows(bias.data[None], self.right)


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
    check_norms(adapter)
    _check_sizes(adapter, config)
    untied = untie_lm_head(adapter)
    hidden = adapter.embed_tokens.weight.shape[1]
    rotation = ResidualRotation(hidden, config.seed)
    rotation.rotate_reader(adapter.embed_tokens.weight.data)
    norms = readers = writers = 0
    for layer in each(adapter.layers, "rotate", "layer"):
        if stream is not None:
            stream.load(layer)
            check_layer_norms(layer, hidden)
        for group in layer_norm_readers(layer):
            readers += rotation.fold_and_rotate(group)
            norms += 1
        for writer in layer_residual_writers(layer):
            rotation.rotate_writer(writer)
            writers += 1
        if layer.is_moe and layer.mlp.experts.bias("down") is not None:
            # biased experts (gpt-oss) add b_e to the residual too: b_e ← b_e·Q
            transform_rows(layer.mlp.experts.bias("down"), rotation.right)
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
        "readers_rotated": readers,
        "writers_rotated": writers,
        "untied_lm_head": untied,
        "online_hadamard": None,
    }
    if config.online_hadamard:
        report["online_hadamard"] = fold_online_hadamard(adapter)
        install_online_hadamard(adapter, config.backend)
    return report
