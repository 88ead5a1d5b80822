"""The straightforward EBSS: the executable definition the fast search is tested against.

One sample at a time, one beam at a time, the whole prefix re-run at every step, and every
allowed token of the vocabulary scored as a continuation of every beam. Far too slow for
real use; the tests and the speed benchmark compare `ebss_generate` with it.
"""

from __future__ import annotations

import math

import torch

from moequant.calib.balance import routed_counts, sigma
from moequant.calib.config import GREEDY_TOKENS
from moequant.calib.ebss import EbssResult, beam_cost, check_search
from moequant.calib.measure import model_device
from moequant.models.base import ModelAdapter
from moequant.models.routing import capture_routing


def _prefix_forward(adapter: ModelAdapter, sequence: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token log-probs [V] and routing counts [moe_layers, E] of a whole prefix, without a cache."""
    device = model_device(adapter)
    indices = [layer.index for layer in adapter.moe_layers]
    with capture_routing(adapter) as records:
        logits = adapter.model(input_ids=torch.tensor([sequence], device=device), use_cache=False).logits
    logprobs = torch.log_softmax(logits[0, -1].to(torch.float64), dim=-1).cpu()
    return logprobs, routed_counts(records, indices, 1, adapter.num_experts)[0]


@torch.no_grad()
def _repeats(sequence: list[int], n: int, vocab: int) -> torch.Tensor:
    """[vocab] the tokens that would complete an n-gram `sequence` already holds, by plain iteration."""
    blocked = torch.zeros(vocab, dtype=torch.bool)
    if n < 1 or len(sequence) < n:
        return blocked
    tail = sequence[len(sequence) - (n - 1) :]
    for start in range(len(sequence) - n + 1):
        if sequence[start : start + n - 1] == tail:
            blocked[sequence[start + n - 1]] = True
    return blocked


def _reference_one(
    adapter: ModelAdapter, first: int, allowed: torch.Tensor, seqlen: int, tau: float, width: int, no_repeat_ngram: int
) -> tuple[list[int], float, torch.Tensor]:
    banned = ~allowed
    vocab = allowed.numel()
    sequence, total = [first], 0.0
    for _ in range(min(GREEDY_TOKENS, seqlen - 1)):
        logprobs, _ = _prefix_forward(adapter, sequence)
        blocked = banned | _repeats(sequence, no_repeat_ngram, vocab)
        lp, token = logprobs.masked_fill(blocked, -math.inf).max(dim=0)
        sequence, total = [*sequence, int(token)], total + float(lp)
    beams = [(sequence, total)]
    while len(beams[0][0]) < seqlen:
        scores, costs = [], []
        for beam, beam_total in beams:
            logprobs, counts = _prefix_forward(adapter, beam)
            scores.append(logprobs.masked_fill(banned | _repeats(beam, no_repeat_ngram, vocab), -math.inf))
            costs.append(beam_cost(beam_total + scores[-1], len(beam), sigma(counts), tau))
        _, best = torch.stack(costs).reshape(-1).topk(width, largest=False, sorted=True)
        beams = [
            ([*beams[i // vocab][0], i % vocab], beams[i // vocab][1] + float(scores[i // vocab][i % vocab]))
            for i in best.tolist()
        ]
    finals = []
    for beam, beam_total in beams:
        _, counts = _prefix_forward(adapter, beam)
        cost = beam_cost(torch.tensor(beam_total, dtype=torch.float64), seqlen - 1, sigma(counts), tau)
        finals.append((float(cost), beam, beam_total, counts))
    _, beam, beam_total, counts = min(finals, key=lambda item: item[0])
    return beam, beam_total, counts


def ebss_reference(adapter: ModelAdapter, first: torch.Tensor, allowed: torch.Tensor, seqlen: int,
                   tau: float = 1.2, width: int = 4, no_repeat_ngram: int = 0) -> EbssResult:
    check_search(allowed, width, seqlen, getattr(adapter.model.config, "max_position_embeddings", None))
    found = [_reference_one(adapter, int(token), allowed, seqlen, tau, width, no_repeat_ngram) for token in first]
    return EbssResult(
        torch.tensor([beam for beam, _, _ in found], dtype=torch.long),
        torch.tensor([total for _, total, _ in found], dtype=torch.float64),
        torch.stack([counts for _, _, counts in found]),
    )
