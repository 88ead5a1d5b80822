"""Make one calibration set from any source and describe it in the shared file format.

Every source ends in the same place: token ids, per-sample routing counts and mean
log-prob, from which the per-sample σ and the set-level summary are derived identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import moequant
from moequant.artifacts import file_sha256
from moequant.calib.balance import expert_usage, layer_sigma, sigma
from moequant.calib.config import CalibConfig
from moequant.calib.ebss import ebss_generate, first_tokens
from moequant.calib.measure import measure, model_device
from moequant.calib.records import CalibrationRecord, tokenizer_fingerprint, write_calibration
from moequant.calib.repetition import repetition_summary
from moequant.calib.vocab import tokenizer_allowed_mask
from moequant.calib.windows import text_windows
from moequant.corpora import load_hub_documents, read_text_file
from moequant.memory import peaks
from moequant.models.config import check_seqlen
from moequant.models import adapt


def _input_hashes(config: CalibConfig) -> dict[str, str]:
    """Hashes of the local files a set was drawn from, so a changed input invalidates it."""
    paths = [p for p in (config.text_path, config.data_path) if p is not None]
    return {p: file_sha256(Path(p).expanduser()) for p in paths if Path(p).expanduser().is_file()}


def source_windows(tokenizer: Any, config: CalibConfig) -> torch.Tensor:
    """Token windows [nsamples, seqlen] of a text source; needs no model, so bad input fails before loading one."""
    if config.text_path is not None:
        documents, name = read_text_file(config.text_path), config.text_path
    else:
        documents, name = load_hub_documents(config.source, "calibration", config.data_path), config.source
    return text_windows(tokenizer, documents, config.nsamples, config.seqlen, config.seed, name)


def build_calibration(
    model: torch.nn.Module,
    tokenizer: Any,
    config: CalibConfig,
    progress: bool = False,
    windows: torch.Tensor | None = None,
) -> tuple[list[CalibrationRecord], dict[str, Any]]:
    """The records and summary of the set `config` asks for (summary lacks only the model's name).

    `windows` passes text-source windows already drawn with `source_windows`.
    """
    adapter = adapt(model)
    check_seqlen(model.config, config.seqlen)
    start = time.perf_counter()
    if config.is_ebss:
        allowed = tokenizer_allowed_mask(tokenizer, adapter.lm_head.out_features)
        first = first_tokens(allowed, config.nsamples, config.seed, config.enumerate_first_token)
        result = ebss_generate(
            adapter, first, allowed, config.seqlen, config.tau, config.width, config.batch_size, progress,
            config.no_repeat_ngram,
        )
        input_ids, counts, mean_logprob = result.input_ids, result.counts, result.mean_logprob
        residual = None
    else:
        input_ids = source_windows(tokenizer, config) if windows is None else windows
        stats = measure(adapter, input_ids, config.batch_size)
        counts, mean_logprob, residual = stats.counts, stats.mean_logprob, stats.residual
    seconds = time.perf_counter() - start
    sample_sigma = sigma(counts)
    records = [
        CalibrationRecord(ids, tokenizer.decode(ids), float(lp), float(s))
        for ids, lp, s in zip(input_ids.tolist(), mean_logprob, sample_sigma)
    ]
    total = counts.sum(dim=0)
    set_logprob = float(mean_logprob.mean())
    summary = {
        "source": config.source,
        "config": asdict(config),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "nsamples": config.nsamples,
        "seqlen": config.seqlen,
        "sigma": float(sigma(total)),
        "per_layer_sigma": layer_sigma(total).tolist(),
        "per_layer_usage": expert_usage(total).tolist(),
        "moe_layers": [layer.index for layer in adapter.moe_layers],
        "sample_sigma_mean": float(sample_sigma.mean()),
        "mean_logprob": set_logprob,
        "perplexity": math.exp(-set_logprob),
        "repetition": repetition_summary(input_ids.tolist()),
        **({"residual_stream": residual} if residual else {}),
        "seconds": seconds,
        "memory": peaks(model_device(adapter)),
        "tokens_per_second": config.nsamples * config.seqlen / seconds if seconds > 0 else None,
        "inputs": _input_hashes(config),
        "moequant_version": moequant.__version__,
    }
    return records, summary


def write_calibration_set(
    out: str | Path,
    model: torch.nn.Module,
    tokenizer: Any,
    config: CalibConfig,
    model_name: str,
    progress: bool = False,
    windows: torch.Tensor | None = None,
) -> dict[str, Any]:
    records, summary = build_calibration(model, tokenizer, config, progress, windows)
    summary["model"] = model_name
    write_calibration(out, records, summary)
    return summary
