from __future__ import annotations

import pytest
import torch

from moequant.calib.windows import corpus_text, sample_windows
from moequant.errors import UsageError


def test_windows_are_seeded_slices_of_the_stream() -> None:
    stream = torch.arange(1000)
    windows = sample_windows(stream, nsamples=6, seqlen=32, seed=7, name="t")
    assert windows.shape == (6, 32)
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(6, 31, dtype=torch.long))
    assert torch.equal(windows, sample_windows(stream, 6, 32, 7, "t"))
    assert not torch.equal(windows, sample_windows(stream, 6, 32, 8, "t"))
    assert torch.equal(sample_windows(stream, 3, 1000, 0, "t"), stream.expand(3, -1))


def test_too_short_a_corpus_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="corpus has 10 tokens, fewer than one window of seqlen 11"):
        sample_windows(torch.arange(10), 1, 11, 0, "corpus")


def test_large_corpora_contribute_a_seeded_subset() -> None:
    documents = [f"doc{i} " * 10 for i in range(100)]
    assert corpus_text(documents, seed=0, max_chars=10**6) == "\n\n".join(documents)
    subset = corpus_text(documents, seed=0, max_chars=500)
    assert 500 <= len(subset) < 700
    assert subset == corpus_text(documents, seed=0, max_chars=500)
    assert subset != corpus_text(documents, seed=1, max_chars=500)
