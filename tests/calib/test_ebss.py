from __future__ import annotations

import pytest
import torch

from moequant.calib.balance import sigma
from moequant.calib.ebss import ebss_generate, first_tokens
from tests.calib.ebss_reference import ebss_reference
from moequant.calib.measure import measure
from moequant.calib.vocab import allowed_token_mask
from moequant.errors import UsageError
from moequant.models import adapt

SPECIAL = {0, 1, 2}


def _allowed(model: torch.nn.Module) -> torch.Tensor:
    return allowed_token_mask(model.config.vocab_size, SPECIAL)


@pytest.mark.parametrize(
    ("layout", "width", "tau"),
    [("mixtral", 3, 1.2), ("qwen2_moe", 4, 0.05), ("deepseek_v3", 2, 1.2), ("deepseek_remote", 3, 0.1)],
)
def test_wxw_search_equals_full_vocabulary_reference(tiny_f64, layout: str, width: int, tau: float) -> None:
    model = tiny_f64(layout)
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 3, seed=5)
    fast = ebss_generate(adapter, first, allowed, seqlen=11, tau=tau, width=width, batch_size=3)
    reference = ebss_reference(adapter, first, allowed, seqlen=11, tau=tau, width=width)
    assert torch.equal(fast.input_ids, reference.input_ids)
    assert torch.equal(fast.counts, reference.counts)
    assert torch.allclose(fast.logprob_sum, reference.logprob_sum, rtol=0, atol=1e-6)
    assert torch.equal(fast.input_ids[:, 0], first)


def test_balance_term_changes_the_search(tiny_f64) -> None:
    """A strong σ term must pick other sequences than plain beam search, with lower σ."""
    model = tiny_f64("mixtral")
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 6, seed=0)
    balanced = ebss_generate(adapter, first, allowed, seqlen=24, tau=0.01, width=4)
    plain = ebss_generate(adapter, first, allowed, seqlen=24, tau=1e9, width=4)
    assert not torch.equal(balanced.input_ids, plain.input_ids)
    assert float(sigma(balanced.counts).mean()) < float(sigma(plain.counts).mean())
    assert float(balanced.mean_logprob.mean()) < float(plain.mean_logprob.mean())


@pytest.mark.parametrize("layout", ["mixtral", "olmoe"])
def test_batched_equals_one_sample_at_a_time(tiny_f64, layout: str) -> None:
    model = tiny_f64(layout)
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 5, seed=3)
    together = ebss_generate(adapter, first, allowed, seqlen=16, width=4, batch_size=5)
    alone = ebss_generate(adapter, first, allowed, seqlen=16, width=4, batch_size=1)
    assert torch.equal(together.input_ids, alone.input_ids)
    assert torch.equal(together.counts, alone.counts)
    assert torch.allclose(together.logprob_sum, alone.logprob_sum, rtol=0, atol=1e-9)


def test_incremental_counts_and_logprob_match_a_full_forward(tiny_f64) -> None:
    model = tiny_f64("qwen3_moe")
    adapter, allowed = adapt(model), _allowed(model)
    result = ebss_generate(adapter, first_tokens(allowed, 4, seed=1), allowed, seqlen=20, width=3)
    stats = measure(adapter, result.input_ids, batch_size=4)
    assert torch.equal(stats.counts, result.counts)
    assert torch.allclose(stats.mean_logprob, result.mean_logprob, rtol=0, atol=1e-9)


def test_special_tokens_are_never_chosen(make_tiny) -> None:
    model = make_tiny("mixtral")
    boost = torch.zeros(model.config.vocab_size)
    boost[[2, 7, 92]] = 100.0  # EOS, a banned id and an id beyond the tokenizer: the model's favourites
    model.lm_head.register_forward_hook(lambda _module, _inputs, logits: logits + boost)
    adapter = adapt(model)
    unrestricted = allowed_token_mask(model.config.vocab_size, set())
    first = first_tokens(unrestricted, 4, seed=0)
    control = ebss_generate(adapter, first, unrestricted, seqlen=8, width=4)
    assert {2, 7, 92} <= set(control.input_ids[:, 1:].unique().tolist())
    allowed = allowed_token_mask(model.config.vocab_size, SPECIAL | {7}, tokenizer_size=90)
    result = ebss_generate(adapter, first_tokens(allowed, 4, seed=0), allowed, seqlen=8, width=4)
    seen = set(result.input_ids.unique().tolist())
    assert not seen & (SPECIAL | {7})
    assert max(seen) < 90


def test_short_sequences_are_greedy_after_the_first_token(tiny_f64) -> None:
    model = tiny_f64("mixtral")
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 2, seed=0)
    result = ebss_generate(adapter, first, allowed, seqlen=4, width=4)
    with torch.no_grad():
        logits = model(input_ids=result.input_ids[:, :-1]).logits
    greedy = logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)
    assert torch.equal(result.input_ids[:, 1:], greedy)


def test_first_tokens_are_seeded_and_non_special() -> None:
    allowed = allowed_token_mask(20, {0, 1, 2, 5})
    draws = first_tokens(allowed, 50, seed=4)
    assert torch.equal(draws, first_tokens(allowed, 50, seed=4))
    assert not torch.equal(draws, first_tokens(allowed, 50, seed=5))
    assert not set(draws.tolist()) & {0, 1, 2, 5}
    assert first_tokens(allowed, 4, seed=0, enumerate_ids=True).tolist() == [3, 4, 6, 7]
    assert first_tokens(allowed, 17, seed=0, enumerate_ids=True)[-1].item() == 3


def test_search_rejects_impossible_requests(make_tiny) -> None:
    model = make_tiny("mixtral")
    adapter = adapt(model)
    narrow = allowed_token_mask(96, set(range(93)))
    with pytest.raises(UsageError, match="beam width 4 exceeds the 3 non-special"):
        ebss_generate(adapter, first_tokens(narrow, 1, 0), narrow, seqlen=8, width=4)
    allowed = _allowed(model)
    with pytest.raises(UsageError, match="maximum positions"):
        ebss_generate(adapter, first_tokens(allowed, 1, 0), allowed, seqlen=129, width=2)


def test_repeated_ngram_tokens_blocks_what_would_repeat_an_ngram() -> None:
    from moequant.calib.ebss import repeated_ngram_tokens

    history = torch.tensor([[5, 6, 7, 5, 6], [1, 2, 3, 4, 5]])
    blocked = repeated_ngram_tokens(history, 3, 10)
    assert blocked[0].nonzero().flatten().tolist() == [7], "5 6 → 7 already occurred"
    assert not blocked[1].any()
    assert repeated_ngram_tokens(history, 2, 10)[0].nonzero().flatten().tolist() == [7]
    assert not repeated_ngram_tokens(history, 0, 10).any()


@pytest.mark.parametrize(("layout", "n"), [("mixtral", 2), ("deepseek_remote", 3)])
def test_blocked_search_equals_the_blocked_reference(tiny_f64, layout: str, n: int) -> None:
    model = tiny_f64(layout)
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 3, seed=5)
    fast = ebss_generate(adapter, first, allowed, seqlen=11, tau=1.2, width=3, batch_size=3, no_repeat_ngram=n)
    reference = ebss_reference(adapter, first, allowed, seqlen=11, tau=1.2, width=3, no_repeat_ngram=n)
    assert torch.equal(fast.input_ids, reference.input_ids)
    assert torch.equal(fast.counts, reference.counts)


def _has_repeated_ngram(row: list[int], n: int) -> bool:
    grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_sample_repeats_an_ngram_once_blocked(tiny_f64) -> None:
    model = tiny_f64("mixtral")
    adapter, allowed = adapt(model), _allowed(model)
    first = first_tokens(allowed, 6, seed=0)
    plain = ebss_generate(adapter, first, allowed, seqlen=40, width=4)
    blocked = ebss_generate(adapter, first, allowed, seqlen=40, width=4, no_repeat_ngram=3)
    assert any(_has_repeated_ngram(row, 3) for row in plain.input_ids.tolist()), "the test needs repetition to block"
    assert not any(_has_repeated_ngram(row, 3) for row in blocked.input_ids.tolist())
