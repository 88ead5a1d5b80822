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


class ResidualMoments:
    """Running moments of the residual stream entering each decoder layer, channel by channel.

    These are the activations a residual-stream rotation acts on: a real LLM carries a few
    channels tens of times larger than the rest (massive activations), which is what the
    rotation spreads out. Summarised as the largest channel RMS over the overall RMS and the
    kurtosis E[x⁴]/E[x²]² of all entries (3 for a Gaussian).
    """

    def __init__(self, layers: int) -> None:
        self.square: list[torch.Tensor | None] = [None] * layers
        self.fourth = [0.0] * layers
        self.count = [0] * layers

    def add(self, index: int, hidden: torch.Tensor) -> None:
        x = hidden.detach().reshape(-1, hidden.shape[-1]).double()
        square = x.pow(2).sum(dim=0).cpu()
        self.square[index] = square if self.square[index] is None else self.square[index] + square
        self.fourth[index] += float(x.pow(4).sum())
        self.count[index] += x.shape[0]

    def summary(self) -> dict[str, list[float]]:
        ratio, kurtosis = [], []
        for square, fourth, count in zip(self.square, self.fourth, self.count):
            if square is None:
                continue
            channel = square / count
            overall = float(channel.mean())
            ratio.append(float(channel.max().sqrt()) / overall**0.5)
            kurtosis.append(fourth / (count * channel.numel()) / overall**2)
        return {"channel_max_over_rms": ratio, "kurtosis": kurtosis}


@dataclass
class SampleStats:
    counts: torch.Tensor
    """[nsamples, moe_layers, E] top-k selections of each sample's tokens."""
    mean_logprob: torch.Tensor
    """[nsamples] float64 mean of log P(x_i | x_<i) over the predicted tokens (all but the first)."""
    residual: dict[str, list[float]] | None = None
    """`ResidualMoments.summary()` per decoder layer, for text windows."""


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
    moments = ResidualMoments(len(adapter.layers))

    def observe(index: int):
        def hook(_module, args, kwargs) -> None:
            moments.add(index, args[0] if args else kwargs["hidden_states"])

        return hook

    handles = [
        layer.module.register_forward_pre_hook(observe(position), with_kwargs=True)
        for position, layer in enumerate(adapter.layers)
    ]
    try:
        for batch in input_ids.split(batch_size):
            batch = batch.to(device)
            with capture_routing(adapter) as records:
                logits = adapter.model(input_ids=batch, use_cache=False).logits
            counts.append(routed_counts(records, indices, batch.shape[0], adapter.num_experts))
            logprobs.append(token_logprobs(logits[:, :-1], batch[:, 1:]).mean(dim=-1).cpu())
    finally:
        for handle in handles:
            handle.remove()
    return SampleStats(torch.cat(counts), torch.cat(logprobs), moments.summary())
