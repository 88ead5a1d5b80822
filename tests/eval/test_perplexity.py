"""Perplexity protocols: window boundaries, PPL = exp(mean NLL), KL to a reference model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from moequant.errors import UsageError
from moequant.eval.config import PerplexityConfig
from moequant.eval.datasets import EvalText
from moequant.eval.perplexity import (
    build_windows,
    consecutive_windows,
    evaluate_windows,
    measure_perplexity,
    random_windows,
    tokenize,
)


def test_consecutive_windows_are_non_overlapping_from_the_start_and_drop_the_tail() -> None:
    ids = torch.arange(100)
    windows = consecutive_windows(ids, 32)
    assert windows.shape == (3, 32)
    for index in range(3):
        assert torch.equal(windows[index], torch.arange(32 * index, 32 * (index + 1)))
    assert torch.equal(consecutive_windows(ids, 32, max_windows=2), windows[:2])
    with pytest.raises(UsageError, match="fewer than one window"):
        consecutive_windows(torch.arange(31), 32)


def test_random_windows_come_from_long_enough_documents_and_a_prefix_is_a_shorter_run(tokenizer) -> None:
    documents = ["short text.", "x" * 10, " ".join(f"word{i}" for i in range(200)), " ".join(f"n{i}" for i in range(300))]
    streams = [tokenize(tokenizer, doc) for doc in documents]
    windows = random_windows(documents, tokenizer, seqlen=16, count=12, seed=0)
    assert windows.shape == (12, 16)
    for window in windows:
        hosts = [s for s in streams if s.numel() > 16 and any(torch.equal(s[i : i + 16], window) for i in range(s.numel() - 15))]
        assert hosts, "every window is a contiguous slice of a document longer than seqlen"
    assert torch.equal(random_windows(documents, tokenizer, 16, 5, seed=0), windows[:5])
    assert not torch.equal(random_windows(documents, tokenizer, 16, 12, seed=1), windows)
    with pytest.raises(UsageError, match="no document"):
        random_windows(documents[:2], tokenizer, 16, 1, seed=0)


def test_build_windows_caps_random_draws_by_max_windows(tokenizer) -> None:
    text = EvalText("c4", "random", [" ".join(f"w{i}" for i in range(400))], "test")
    config = PerplexityConfig(dataset="c4", seqlen=16, max_windows=3)
    assert build_windows(text, tokenizer, config).shape == (3, 16)


def _independent_ppl(model, windows: torch.Tensor) -> float:
    """HF's own shifted cross-entropy per window; equal-length windows make the mean of means the mean."""
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.double().item() for w in windows]
    return math.exp(sum(losses) / len(losses))


def test_ppl_is_exp_mean_nll_on_the_same_windows(model, tokenizer, text_file) -> None:
    config = PerplexityConfig(dataset=f"text:{text_file}", seqlen=32, batch_size=3, max_windows=7)
    measured = measure_perplexity(model, tokenizer, config, progress=False)
    windows = consecutive_windows(tokenize(tokenizer, text_file.read_text()), 32, 7)
    assert measured["windows"] == 7 and measured["tokens"] == 7 * 31
    assert measured["ppl"] == pytest.approx(_independent_ppl(model, windows), rel=1e-5)
    single = evaluate_windows(model, windows, batch_size=1, progress=False)
    assert single.ppl == pytest.approx(measured["ppl"], rel=1e-6)
    assert measured["kld"] is None and measured["top1_agree"] is None


def test_kl_of_a_model_against_itself_is_zero_and_top1_agreement_one(model, tokenizer, text_file) -> None:
    windows = consecutive_windows(tokenize(tokenizer, text_file.read_text()), 32, 4)
    result = evaluate_windows(model, windows, batch_size=2, reference=model, progress=False)
    assert abs(result.kld) <= 1e-6
    assert result.top1_agree == 1.0
    assert result.reference_ppl == pytest.approx(result.ppl, rel=1e-9)


def test_kl_matches_an_explicit_float64_sum(model, tokenizer, text_file) -> None:
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for param in perturbed.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    windows = consecutive_windows(tokenize(tokenizer, text_file.read_text()), 32, 3)
    result = evaluate_windows(perturbed, windows, batch_size=2, reference=model, progress=False)
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=windows).logits[:, :-1].double(), -1)
        log_q = torch.log_softmax(perturbed(input_ids=windows).logits[:, :-1].double(), -1)
    expected_kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    expected_agree = (log_p.argmax(-1) == log_q.argmax(-1)).double().mean().item()
    assert result.kld > 1e-4
    assert result.kld == pytest.approx(expected_kl, rel=1e-4)
    assert result.top1_agree == pytest.approx(expected_agree)
    assert result.top1_agree < 1.0


def test_seqlen_beyond_the_models_positions_is_refused(model, tokenizer, text_file) -> None:
    config = PerplexityConfig(dataset=f"text:{text_file}", seqlen=model.config.max_position_embeddings + 1)
    with pytest.raises(UsageError, match="exceeds the model's maximum positions"):
        measure_perplexity(model, tokenizer, config, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dataset="ptb"), "unknown dataset 'ptb'"),
        (dict(dataset="text:"), "unknown dataset"),
        (dict(dataset="c4", seqlen=1), "seqlen must be at least 2"),
        (dict(dataset="c4", batch_size=0), "batch_size"),
        (dict(dataset="c4", max_windows=0), "max_windows"),
        (dict(dataset="text:x.txt", data_path="y"), "data_path replaces a Hub dataset"),
    ],
)
def test_config_rejects_bad_values(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        PerplexityConfig(**kwargs)
