"""Which token ids generation may choose: EOS, padding and every other special token never."""

from __future__ import annotations

from typing import Any

import torch

from moequant.errors import require


def special_token_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def allowed_token_mask(vocab_size: int, banned: set[int], tokenizer_size: int | None = None) -> torch.Tensor:
    """Bool [vocab_size]: ids a sample may contain.

    Rows of the output layer beyond the tokenizer's vocabulary (padding for alignment) are
    excluded too: they decode to nothing and were never trained.
    """
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    if tokenizer_size is not None:
        allowed[tokenizer_size:] = False
    for index in banned:
        if 0 <= index < vocab_size:
            allowed[index] = False
    require(bool(allowed.any()), "the vocabulary has no non-special token to generate from")
    return allowed


def tokenizer_allowed_mask(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    return allowed_token_mask(vocab_size, special_token_ids(tokenizer), len(tokenizer))
