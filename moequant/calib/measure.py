"""Per-sample statistics of a calibration set under the model: expert counts and log-prob.

Text windows get their σ and mean log-prob here from one plain forward per batch; EBSS
keeps the same quantities incrementally during its search, and tests check both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moequant.calib.balance import routed_counts
from moequant.models.base import ModelAdapter
from moequant.models.routing import capture_routing


@dataclass
class SampleStats:
    counts: torch.Tensor
    """[nsamples, moe_layers, E] top-k selections of each sample's tokens."""
    mean_logprob: torch.Tensor
    """[nsamples] float64 mean of log P(x_i | x_<i) over the predicted tokens (all but the first)."""


def model_device(adapter: ModelAdapter) -> torch.device:
    return next(adapter.model.parameters()).device


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log P(target) under `logits` [..., V], in float64 so scores compare exactly across code paths."""
    return torch.log_softmax(logits.to(torch.float64), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def measure(adapter: ModelAdapter, input_ids: torch.Tensor, batch_size: int) -> SampleStats:
    device = model_device(adapter)
    indices = [layer.index for layer in adapter.moe_layers]
    counts, logprobs = [], []
    for batch in input_ids.split(batch_size):
        batch = batch.to(device)
        with capture_routing(adapter) as records:
            logits = adapter.model(input_ids=batch, use_cache=False).logits
        counts.append(routed_counts(records, indices, batch.shape[0], adapter.num_experts))
        logprobs.append(token_logprobs(logits[:, :-1], batch[:, 1:]).mean(dim=-1).cpu())
    return SampleStats(torch.cat(counts), torch.cat(logprobs))
