"""Observe the routing a model applies during an ordinary forward pass.

Hooks sit on each MoE block's router and parse its output with the adapter's family
parser, so the ids and coefficients are exactly what the experts received.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from moequant.models.base import ModelAdapter


@contextlib.contextmanager
def capture_routing(adapter: ModelAdapter, keep_logits: bool = False) -> Iterator[dict[int, list[tuple[torch.Tensor, ...]]]]:
    """Record (ids [T, k], coefficients [T, k]) per MoE layer index for every router call.

    With `keep_logits` each record also holds the router's raw scores [T, E] with their
    gradient (`Router.logits`), so a training loss can be built on them.
    """
    records: dict[int, list[tuple[torch.Tensor, ...]]] = {layer.index: [] for layer in adapter.moe_layers}
    handles = []
    for layer in adapter.moe_layers:
        router = layer.mlp.router

        def hook(_module, _inputs, output, index=layer.index, router=router):
            ids, coeffs = router.parse(output)
            k = ids.shape[-1]
            record = (ids.detach().reshape(-1, k), coeffs.detach().reshape(-1, k))
            if keep_logits:
                record = (*record, router.logits(output))
            records[index].append(record)

        handles.append(router.module.register_forward_hook(hook))
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
