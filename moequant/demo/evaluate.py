"""Held-out perplexity and expert usage of a demo model, measured in one pass.

The protocol is the reference one for WikiText2 (tokenize the whole text with the
tokenizer's defaults, cut consecutive windows, drop the tail, average the NLL of every
predicted position), so `train_summary.json` agrees with what `moequant eval-ppl`
reports on the same file and window length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moequant.models import adapt
from moequant.models.routing import capture_routing


def heldout_windows(tokenizer: Any, text: str, seq_len: int) -> torch.Tensor:
    """[n, seq_len] consecutive windows of `text`; the incomplete tail is dropped."""
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
    count = ids.numel() // seq_len
    if count == 0:
        raise ValueError(f"text of {ids.numel()} tokens is shorter than one window of {seq_len}")
    return ids[: count * seq_len].view(count, seq_len)


@dataclass(frozen=True)
class HeldoutResult:
    ppl: float
    nll: float
    tokens: int
    windows: int
    expert_usage: list[list[float]]
    """Fraction of top-k selections per MoE layer (rows) and expert (columns)."""


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch_size: int = 16) -> HeldoutResult:
    """Perplexity of `windows` and the routing the model applied to them."""
    adapter = adapt(model)
    model.eval()
    nll_sum, tokens = 0.0, 0
    with capture_routing(adapter) as records:
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            targets = batch[:, 1:]
            nll_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
            tokens += targets.numel()
    usage = []
    for layer in adapter.moe_layers:
        ids = torch.cat([ids for ids, _ in records[layer.index]]).reshape(-1)
        counts = torch.bincount(ids, minlength=adapter.num_experts).double()
        usage.append([round(v, 6) for v in (counts / counts.sum()).tolist()])
    nll = nll_sum / tokens
    return HeldoutResult(math.exp(nll), nll, tokens, int(windows.shape[0]), usage)


def evaluate_texts(
    model: nn.Module, tokenizer: Any, texts: Mapping[str, str], seq_len: int, batch_size: int = 16
) -> dict[str, HeldoutResult]:
    return {name: evaluate(model, heldout_windows(tokenizer, text, seq_len), batch_size) for name, text in texts.items()}
