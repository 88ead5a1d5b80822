"""Perplexity by the reference protocols, and KL divergence to the full-precision model.

PPL alone moves little for small models; the mean per-token KL(fp‖quantized) and top-1
agreement separate methods far more clearly. They are computed in the same pass as the
NLL, one batch of logits at a time, so two full logit sets never exist in memory.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moequant.errors import UsageError
from moequant.eval.config import PerplexityConfig
from moequant.eval.datasets import EvalText, load_eval_text
from moequant.models.config import check_seqlen, load_config
from moequant.quant.checkpoint import is_quantized_checkpoint
from moequant.progress import Ticker


def precheck_seqlen(spec: str, seqlen: int, trust_remote_code: bool = False) -> None:
    """Refuse a too-long window from the config alone, before gigabytes of weights are read."""
    if is_quantized_checkpoint(spec) and not (Path(spec).expanduser() / "config.json").is_file():
        return
    check_seqlen(load_config(spec, trust_remote_code), seqlen)


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids of a whole text the way the reference code does it (tokenizer defaults, BOS included)."""
    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)


def consecutive_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows from the start; the incomplete tail is dropped, as in GPTQ."""
    count = ids.numel() // seqlen
    if count == 0:
        raise UsageError(f"the text has {ids.numel()} tokens, fewer than one window of seqlen {seqlen}")
    if max_windows is not None:
        count = min(count, max_windows)
    return ids[: count * seqlen].view(count, seqlen).clone()


def random_windows(documents: list[str], tokenizer: Any, seqlen: int, count: int, seed: int) -> torch.Tensor:
    """GPTQ's C4 protocol: pick a document longer than `seqlen` tokens, then a window inside it.

    The draws come from one `random.Random(seed)` stream, so the first k windows of a
    256-window run are exactly a k-window run: `max_windows` gives a prefix, not a resample.
    """
    rng = random.Random(seed)
    token_cache: dict[int, torch.Tensor] = {}
    too_short: set[int] = set()
    windows = []
    for _ in range(count):
        while True:
            if len(too_short) == len(documents):
                raise UsageError(f"no document of the corpus has more than seqlen {seqlen} tokens")
            index = rng.randint(0, len(documents) - 1)
            if index not in token_cache:
                token_cache[index] = tokenize(tokenizer, documents[index])
            ids = token_cache[index]
            if ids.numel() > seqlen:
                break
            too_short.add(index)
        start = rng.randint(0, ids.numel() - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.stack(windows)


def build_windows(text: EvalText, tokenizer: Any, config: PerplexityConfig) -> torch.Tensor:
    if text.protocol == "consecutive":
        return consecutive_windows(tokenize(tokenizer, text.documents[0]), config.seqlen, config.max_windows)
    count = config.random_windows if config.max_windows is None else min(config.random_windows, config.max_windows)
    return random_windows(text.documents, tokenizer, config.seqlen, count, config.seed)


def windows_sha256(windows: torch.Tensor) -> str:
    return hashlib.sha256(windows.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


@dataclass
class PerplexityResult:
    ppl: float
    nll: float
    tokens: int
    windows: int
    kld: float | None = None
    top1_agree: float | None = None
    reference_ppl: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(input_ids=input_ids.to(device), use_cache=False).logits


@torch.no_grad()
def evaluate_windows(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 1,
    reference: nn.Module | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Mean NLL over every predicted position of every window; with `reference`, KL and top-1 too.

    Losses are taken row by row in float32 from the batch's logits, which bounds the float32
    working set to one window whatever the model dtype and batch size.
    """
    nll_sum = ref_nll_sum = kl_sum = 0.0
    agree = tokens = 0
    batches = range(0, windows.shape[0], batch_size)
    ticker = Ticker("perplexity", windows.shape[0], "windows", enabled=progress)
    for start in batches:
        batch = windows[start : start + batch_size]
        logits = _logits(model, batch)
        ref_logits = _logits(reference, batch) if reference is not None else None
        for row in range(batch.shape[0]):
            targets = batch[row, 1:].to(logits.device)
            log_probs = F.log_softmax(logits[row, :-1].float(), dim=-1)
            nll_sum += F.nll_loss(log_probs, targets, reduction="sum").item()
            tokens += targets.numel()
            if ref_logits is not None:
                ref_log_probs = F.log_softmax(ref_logits[row, :-1].float(), dim=-1).to(log_probs.device)
                ref_nll_sum += F.nll_loss(ref_log_probs, targets, reduction="sum").item()
                kl_sum += F.kl_div(log_probs, ref_log_probs, log_target=True, reduction="sum").item()
                agree += (log_probs.argmax(-1) == ref_log_probs.argmax(-1)).sum().item()
        ticker.update(batch.shape[0])
    nll = nll_sum / tokens
    result = PerplexityResult(ppl=math.exp(nll), nll=nll, tokens=tokens, windows=int(windows.shape[0]))
    if reference is not None:
        result.kld = kl_sum / tokens
        result.top1_agree = agree / tokens
        result.reference_ppl = math.exp(ref_nll_sum / tokens)
    return result


def measure_perplexity(
    model: nn.Module,
    tokenizer: Any,
    config: PerplexityConfig,
    reference: nn.Module | None = None,
    progress: bool = True,
    text: EvalText | None = None,
) -> dict[str, Any]:
    """The whole protocol for one config: text → windows → PPL (and KL), plus fingerprints.

    `text` lets a caller load the corpus before the model, so an offline miss fails fast.
    """
    check_seqlen(model.config, config.seqlen)
    if reference is not None:
        check_seqlen(reference.config, config.seqlen)
    if text is None:
        text = load_eval_text(config.dataset, config.data_path)
    windows = build_windows(text, tokenizer, config)
    result = evaluate_windows(model, windows, config.batch_size, reference, progress)
    return {
        **result.as_dict(),
        "seqlen": config.seqlen,
        "dataset": config.dataset,
        "protocol": text.protocol,
        "text_origin": text.origin,
        "text_sha256": text.sha256(),
        "windows_sha256": windows_sha256(windows),
    }
