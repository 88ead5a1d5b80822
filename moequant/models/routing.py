"""Observe the routing a model applies during an ordinary forward pass.

Hooks sit where each MoE block hands its routing to the experts (the standard interface's
call arguments), or on the router of a per-expert module list, so the ids and coefficients
are exactly what the experts received, whatever the family's scoring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from moequant.models.base import ModelAdapter, routing_arguments


@contextlib.contextmanager
def capture_routing(adapter: ModelAdapter, keep_logits: bool = False) -> Iterator[dict[int, list[tuple[torch.Tensor, ...]]]]:
    """Record (ids [T, k], coefficients [T, k]) per MoE layer index for every block call.

    With `keep_logits` each record also holds the router's raw scores [T, E] with their
    gradient (`Router.logits`), so a training loss can be built on them.
    """
    records: dict[int, list[tuple[torch.Tensor, ...]]] = {layer.index: [] for layer in adapter.moe_layers}
    handles = []
    for layer in adapter.moe_layers:
        router = layer.mlp.router
        scores: list[torch.Tensor] = []

        def record(ids: torch.Tensor, coeffs: torch.Tensor, index: int = layer.index, scores: list = scores) -> None:
            entry: tuple[torch.Tensor, ...] = (ids.detach(), coeffs.detach())
            if keep_logits:
                entry = (*entry, scores.pop())
            records[index].append(entry)

        if keep_logits:

            def on_router(_module, _inputs, output, router=router, scores=scores):
                scores.append(router.logits(output))

            handles.append(router.module.register_forward_hook(on_router))
        if router.parse is None:

            def on_experts(_module, args, kwargs, record=record):
                record(*routing_arguments(args, kwargs))

            handles.append(router.experts_module.register_forward_pre_hook(on_experts, with_kwargs=True))
        else:

            def on_parsed(_module, _inputs, output, router=router, record=record):
                ids, coeffs = router.parse(output)
                k = ids.shape[-1]
                record(ids.reshape(-1, k), coeffs.reshape(-1, k))

            handles.append(router.module.register_forward_hook(on_parsed))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def expert_counts(
    adapter: ModelAdapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k selection counts [n_moe_layers, E] over the (unpadded) tokens of `input_ids`."""
    keep = None if attention_mask is None else attention_mask.reshape(-1).bool()
    with capture_routing(adapter) as records:
        adapter.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    counts = torch.zeros(len(adapter.moe_layers), adapter.num_experts, dtype=torch.long)
    for row, layer in enumerate(adapter.moe_layers):
        ids = torch.cat([ids for ids, _ in records[layer.index]])
        if keep is not None:
            ids = ids[keep.to(ids.device)]
        counts[row] = torch.bincount(ids.reshape(-1).cpu(), minlength=adapter.num_experts)
    return counts
