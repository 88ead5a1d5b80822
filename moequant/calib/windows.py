"""Seeded random windows of `seqlen` tokens from a text corpus (method §3).

Documents are joined with blank lines into one token stream and windows start anywhere in
it (the GPTQ convention for WikiText2), so short documents such as HumanEval prompts or
GSM8K questions still yield full-length windows.
"""

from __future__ import annotations

from typing import Any

import torch

from moequant.errors import require

JOINER = "\n\n"
MAX_CHARS = 20_000_000
"""Corpora larger than this (C4) contribute a seeded random subset of documents up to this size."""


def corpus_text(documents: list[str], seed: int, max_chars: int = MAX_CHARS) -> str:
    """All documents in order, or a seeded random subset when the corpus is too large to tokenise whole."""
    if sum(len(doc) + len(JOINER) for doc in documents) <= max_chars:
        return JOINER.join(documents)
    picked, size = [], 0
    for index in torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist():
        picked.append(documents[index])
        size += len(documents[index]) + len(JOINER)
        if size >= max_chars:
            break
    return JOINER.join(picked)


def token_stream(tokenizer: Any, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def sample_windows(stream: torch.Tensor, nsamples: int, seqlen: int, seed: int, name: str) -> torch.Tensor:
    """[nsamples, seqlen] windows with seeded uniform start positions (drawn with replacement)."""
    require(
        stream.numel() >= seqlen,
        f"{name} has {stream.numel()} tokens, fewer than one window of seqlen {seqlen}",
    )
    starts = torch.randint(stream.numel() - seqlen + 1, (nsamples,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([stream[start : start + seqlen] for start in starts.tolist()])


def text_windows(
    tokenizer: Any, documents: list[str], nsamples: int, seqlen: int, seed: int, name: str
) -> torch.Tensor:
    return sample_windows(token_stream(tokenizer, corpus_text(documents, seed)), nsamples, seqlen, seed, name)
