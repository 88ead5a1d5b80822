"""Helpers shared by the quantization tests: a word-level tokenizer matching the tiny models'
vocabulary, calibration ids and files, and a plain-torch KL divergence."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 96


def word_tokenizer(prefix: str = "w"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"{prefix}{i}": i for i in range(4, VOCAB)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def write_calib(path: Path, tokenizer, nsamples: int = 8, seqlen: int = 32, seed: int = 0) -> Path:
    from moequant.calib.records import CalibrationRecord, tokenizer_fingerprint, write_calibration

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (nsamples, seqlen), generator=generator)
    records = [CalibrationRecord(row.tolist(), tokenizer.decode(row)) for row in ids]
    write_calibration(path, records, {"source": "random", "tokenizer": tokenizer_fingerprint(tokenizer)})
    return path


def calib_ids(nsamples: int = 8, seqlen: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (nsamples, seqlen), generator=generator)




def mean_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean per-token KL(reference ‖ model) in nats."""
    ref = reference_logits.double().log_softmax(-1)
    out = logits.double().log_softmax(-1)
    return float((ref.exp() * (ref - out)).sum(-1).mean())
