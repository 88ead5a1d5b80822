"""Online Hadamard before every down projection (off by default; prepares activation quantization).

Offline, each down weight becomes W·H (H the deterministic Hadamard of the intermediate
size); at run time its input a becomes a·H, so (aH)(WH)ᵀ = aWᵀ and the function is unchanged
while the down input loses its outlier channels. The runtime half cannot be stored in a
transformers checkpoint, so `install_online_hadamard` must be called again after loading
(`moequant.rotation.artifact.restore_online_hadamard` does it from rotation.json).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from moequant.models import DenseMLP, ExpertBank, ModelAdapter
from moequant.rotation.hadamard import plan
from moequant.rotation.transform import TORCH, hadamard_transform, resolve_backend, transform_rows


def down_projections(adapter: ModelAdapter) -> list[torch.Tensor]:
    """Weight views [H, I] of every down projection: routed, shared and dense."""
    views = []
    for layer in adapter.layers:
        mlp = layer.mlp
        if isinstance(mlp, DenseMLP):
            views.append(mlp.down.weight.data)
            continue
        views.extend(mlp.experts.weight("down", e) for e in range(mlp.experts.num_experts))
        views.extend(shared.down.weight.data for shared in mlp.shared_experts)
    return views


@torch.no_grad()
def fold_online_hadamard(adapter: ModelAdapter) -> dict[str, object]:
    """W_down ← W_down·H in float64; returns the Hadamard plan per intermediate size."""
    sizes: dict[int, str] = {}
    for weight in down_projections(adapter):
        sizes.setdefault(weight.shape[1], plan(weight.shape[1]).describe())
        transform_rows(weight, lambda rows: hadamard_transform(rows, backend=TORCH))
    return {"sizes": {str(size): name for size, name in sorted(sizes.items())}}


class OnlineHadamard:
    """Installed runtime transforms; `used` records which backend actually ran."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.used: set[str] = set()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._patched: list[nn.Module] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chosen = resolve_backend(self.backend, x)
        self.used.add(chosen)
        return hadamard_transform(x, backend=chosen)

    def hook_linear(self, linear: nn.Linear) -> None:
        def pre_hook(_module: nn.Module, args: tuple) -> tuple:
            return (self(args[0]), *args[1:])

        self._handles.append(linear.register_forward_pre_hook(pre_hook))

    def patch_fused(self, bank: ExpertBank) -> None:
        """Fused experts give no module boundary before the down product: recompute their forward."""
        bank.module.forward = _fused_forward(bank, self)
        self._patched.append(bank.module)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._patched:
            del module.forward
        self._handles.clear()
        self._patched.clear()


def _fused_forward(bank: ExpertBank, transform: Callable[[torch.Tensor], torch.Tensor]):
    """The transformers fused-experts call (hidden [T, H], top-k ids [T, k], weights [T, k])."""

    def forward(hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden)
        for expert in torch.unique(top_k_index).tolist():
            if not 0 <= expert < bank.num_experts:
                continue
            token, slot = torch.where(top_k_index == expert)
            x = hidden[token]
            inner = bank.intermediate(expert, x)
            y = transform(inner) @ bank.weight("down", expert).t()
            out.index_add_(0, token, (y * top_k_weights[token, slot, None]).to(out.dtype))
        return out

    return forward


def install_online_hadamard(adapter: ModelAdapter, backend: str = "auto") -> OnlineHadamard:
    """Apply a·H to the input of every down projection at run time (weights must already be W·H)."""
    online = OnlineHadamard(backend)
    for layer in adapter.layers:
        mlp = layer.mlp
        if isinstance(mlp, DenseMLP):
            online.hook_linear(mlp.down)
            continue
        if mlp.experts.layout == "fused":
            online.patch_fused(mlp.experts)
        else:
            for expert in mlp.experts.experts:
                online.hook_linear(expert.down)
        for shared in mlp.shared_experts:
            online.hook_linear(shared.down)
    return online
