"""EBSS: expert-balanced self-sampling (method §2), batched over samples × beams with a KV cache.

Each partial sequence S of length l costs −(1/(l−1))·Σ log P(S_i | S_<i) + σ(S)/τ, the sum
running over the predicted tokens (the first token is drawn, not predicted). Extending a
parent by token v uses the parent's σ (deferred imbalance), so within a parent the cost is
monotone in log P(v): the global w cheapest candidates are among each parent's top-w
tokens, and w×w candidates per step give exactly the answer of scoring w×|V|.

Per-beam expert counts grow by the routing of each newly appended token, observed with
`capture_routing` during the cached one-token forward; the prefix is never re-run.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from moequant.calib.balance import routed_counts, sigma
from moequant.calib.config import GREEDY_TOKENS
from moequant.calib.measure import model_device
from moequant.errors import require
from moequant.models.base import ModelAdapter
from moequant.models.routing import capture_routing
from moequant.progress import Ticker


@dataclass
class EbssResult:
    input_ids: torch.Tensor
    """[nsamples, seqlen] the chosen sequence of each sample."""
    logprob_sum: torch.Tensor
    """[nsamples] float64 sum of log P over the predicted tokens."""
    counts: torch.Tensor
    """[nsamples, moe_layers, E] routing counts of every token of each sequence."""

    @property
    def mean_logprob(self) -> torch.Tensor:
        return self.logprob_sum / (self.input_ids.shape[1] - 1)


def first_tokens(allowed: torch.Tensor, nsamples: int, seed: int, enumerate_ids: bool = False) -> torch.Tensor:
    """Seeded uniform draws from the allowed ids, or the allowed ids in order (the released data's scheme)."""
    candidates = allowed.nonzero().squeeze(1)
    if enumerate_ids:
        picks = torch.arange(nsamples) % candidates.numel()
    else:
        picks = torch.randint(candidates.numel(), (nsamples,), generator=torch.Generator().manual_seed(seed))
    return candidates[picks]


def beam_cost(logprob_sum: torch.Tensor, predicted: int, parent_sigma: torch.Tensor, tau: float) -> torch.Tensor:
    """The search cost; shared with the reference search so both rank with identical arithmetic."""
    return -logprob_sum / predicted + parent_sigma / tau


def check_search(allowed: torch.Tensor, width: int, seqlen: int, max_positions: int | None) -> None:
    require(
        int(allowed.sum()) >= width,
        f"beam width {width} exceeds the {int(allowed.sum())} non-special tokens of the vocabulary",
    )
    require(
        max_positions is None or seqlen <= max_positions,
        f"seqlen {seqlen} exceeds the model's maximum positions ({max_positions})",
    )


class _Decoder:
    """One-token cached forwards of a fixed set of rows, returning log-probs and routing counts."""

    def __init__(self, adapter: ModelAdapter, rows: int) -> None:
        self.adapter = adapter
        self.rows = rows
        self.device = model_device(adapter)
        self.indices = [layer.index for layer in adapter.moe_layers]
        # None on the first step: the model builds the cache it needs (hybrid Mamba and
        # linear-attention families have their own classes, which refuse a plain DynamicCache)
        self.cache: Any = None
        # transformers renamed `past_key_values` to `cache` (the old name is deprecated);
        # remote-code models keep whichever their own forward declares.
        declared = inspect.signature(adapter.model.forward).parameters
        self.cache_name = "cache" if "cache" in declared else "past_key_values"

    def step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with capture_routing(self.adapter) as records:
            out = self.adapter.model(
                input_ids=tokens.to(self.device).unsqueeze(1), **{self.cache_name: self.cache}, use_cache=True
            )
        self.cache = getattr(out, self.cache_name)
        logprobs = torch.log_softmax(out.logits[:, -1].to(torch.float64), dim=-1)
        return logprobs, routed_counts(records, self.indices, self.rows, self.adapter.num_experts)

    def reorder(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows.to(self.device))


def repeated_ngram_tokens(history: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """[rows, vocab] mask of the tokens that would repeat an n-gram already in each row of `history`.

    A token v is blocked after a row ending in the (n−1)-gram g when g·v occurred earlier in
    that row: the search can no longer loop on a phrase, while every token stays allowed
    in a context it has not followed yet.
    """
    rows, length = history.shape
    blocked = torch.zeros(rows, vocab + 1, dtype=torch.bool)
    if n < 1 or length < n:
        return blocked[:, :vocab]
    windows = history.unfold(1, n, 1)
    tail = history[:, length - (n - 1) :]
    matches = (windows[:, :, : n - 1] == tail[:, None, :]).all(dim=-1) if n > 1 else torch.ones(windows.shape[:2], dtype=torch.bool)
    followers = torch.where(matches, windows[:, :, n - 1], vocab)
    blocked.scatter_(1, followers, True)
    return blocked[:, :vocab]


def _backtrack(
    first: torch.Tensor, chosen: list[torch.Tensor], parents: list[torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """The token sequences [len(rows), 1 + steps] of beams `rows`, read back through the parent pointers."""
    tokens = torch.empty(len(rows), 1 + len(chosen), dtype=torch.long)
    for step in range(len(chosen) - 1, -1, -1):
        tokens[:, step + 1] = chosen[step][rows]
        rows = parents[step][rows]
    tokens[:, 0] = first[rows]
    return tokens


@torch.no_grad()
def _search_batch(
    adapter: ModelAdapter,
    first: torch.Tensor,
    allowed: torch.Tensor,
    seqlen: int,
    tau: float,
    width: int,
    ticker: Ticker,
    no_repeat_ngram: int = 0,
) -> EbssResult:
    samples = first.numel()
    rows = samples * width
    decoder = _Decoder(adapter, rows)
    banned = ~allowed.to(decoder.device)
    offsets = (torch.arange(samples) * width).repeat_interleave(width)
    start = first.repeat_interleave(width)
    # Each step appends one token per beam and a parent pointer; sequences are read back once at
    # the end instead of re-gathering every [rows, length] prefix at every step.
    chosen_steps: list[torch.Tensor] = []
    parent_steps: list[torch.Tensor] = []
    logprob_sum = torch.zeros(rows, dtype=torch.float64)
    # Beams start as copies of one sequence; only the first is live until the search branches.
    alive = (torch.arange(rows) % width) == 0
    identity = torch.arange(rows)
    logprobs, counts = decoder.step(start)
    # Only the repetition block needs every beam's tokens so far; without it they are read
    # back through the parent pointers at the end.
    history = start[:, None] if no_repeat_ngram else None
    for step in range(seqlen - 1):
        scores = logprobs.masked_fill_(banned, -math.inf).cpu()
        if history is not None:
            scores.masked_fill_(repeated_ngram_tokens(history, no_repeat_ngram, scores.shape[1]), -math.inf)
        if step < GREEDY_TOKENS:
            chosen_lp, chosen = scores.max(dim=-1)
            parents = identity
        else:
            top_lp, top_ids = scores.topk(width, dim=-1)
            cost = beam_cost(logprob_sum.unsqueeze(1) + top_lp, step + 1, sigma(counts).unsqueeze(1), tau)
            cost = cost.masked_fill(~alive.unsqueeze(1), math.inf).reshape(samples, width * width)
            best_cost, best = cost.topk(width, dim=-1, largest=False, sorted=True)
            best = best.reshape(-1)
            parents = offsets + best // width
            chosen_lp = top_lp.reshape(-1, width * width)[offsets // width, best]
            chosen = top_ids.reshape(-1, width * width)[offsets // width, best]
            alive = best_cost.reshape(-1).isfinite()
            decoder.reorder(parents)
        chosen_steps.append(chosen)
        parent_steps.append(parents)
        if history is not None:
            history = torch.cat([history[parents], chosen[:, None]], dim=1)
        logprob_sum = logprob_sum[parents] + chosen_lp
        logprobs, new_counts = decoder.step(chosen)
        counts = counts[parents] + new_counts
        ticker.update(samples, lambda: f"σ of the live beams {sigma(counts)[alive].mean().item():.4f}")
    final = beam_cost(logprob_sum, seqlen - 1, sigma(counts), tau).masked_fill(~alive, math.inf)
    pick = offsets[::width] + final.reshape(samples, width).argmin(dim=-1)
    return EbssResult(_backtrack(start, chosen_steps, parent_steps, pick), logprob_sum[pick], counts[pick])


def ebss_generate(
    adapter: ModelAdapter,
    first: torch.Tensor,
    allowed: torch.Tensor,
    seqlen: int,
    tau: float = 1.2,
    width: int = 4,
    batch_size: int = 16,
    progress: bool = False,
    no_repeat_ngram: int = 0,
) -> EbssResult:
    """One EBSS sequence per entry of `first` (its first token), `batch_size` samples per batch.

    The final sequence of each sample is its live beam of lowest cost, where σ is now the
    sequence's own (its last token has been routed), no longer the parent's. With
    `no_repeat_ngram` n > 0, no sequence repeats an n-gram (`repeated_ngram_tokens`); the
    paper's search is n = 0.
    """
    check_search(allowed, width, seqlen, getattr(adapter.model.config, "max_position_embeddings", None))
    batches = first.split(batch_size)
    results = []
    ticker = Ticker("EBSS", first.numel() * (seqlen - 1), "tokens", enabled=progress)
    for batch in batches:
        results.append(_search_batch(adapter, batch, allowed, seqlen, tau, width, ticker, no_repeat_ngram))
    return EbssResult(
        torch.cat([r.input_ids for r in results]),
        torch.cat([r.logprob_sum for r in results]),
        torch.cat([r.counts for r in results]),
    )
