"""Build a demo directory: corpus files, tokenizer, trained model and its summary.

Everything lands in a temporary sibling first and is renamed into place at the end, so a
build that fails or is interrupted never leaves a directory that looks finished.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers

from moequant.artifacts import atomic_dir, write_json
from moequant.demo.corpus import DOMAINS, JOINER, MIXED, FULL_BUDGET, TINY_BUDGET, Corpus, CorpusBudget, build_corpus
from moequant.demo.evaluate import evaluate_texts
from moequant.demo.tokenizer import demo_tokenizer
from moequant.demo.train import (
    DEFAULT_SHAPE,
    DEFAULT_STEPS,
    FAMILIES,
    TINY_SHAPE,
    DemoShape,
    TrainSettings,
    deterministic,
    new_model,
    train,
)
from moequant.errors import UsageError, require
from moequant.models import adapt

SUMMARY = "train_summary.json"
_MIN_VOCAB = 300
"""256 byte tokens, three special tokens and a few merges."""


def check_shape(shape: DemoShape) -> None:
    for field in dataclasses.fields(shape):
        value = getattr(shape, field.name)
        require(isinstance(value, int) and value >= 1, f"{field.name} must be a positive integer, got {value!r}")
    require(shape.hidden_size % shape.num_heads == 0, "hidden_size must be a multiple of num_heads")
    require(shape.num_heads % shape.num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads")
    require((shape.hidden_size // shape.num_heads) % 4 == 0, "head size (hidden_size / num_heads) must be a multiple of 4")
    require(shape.top_k <= shape.num_experts, "top_k cannot exceed num_experts")
    require(shape.vocab_size >= _MIN_VOCAB, f"vocab_size must be at least {_MIN_VOCAB}")
    require(shape.seq_len >= 8, "seq_len must be at least 8")


def check_out_dir(out_dir: Path) -> None:
    """Refuse a path that a build would destroy without being a previous build."""
    require(not out_dir.exists() or out_dir.is_dir(), f"--out {str(out_dir)!r} exists and is not a directory")
    if out_dir.is_dir():
        require(
            not any(out_dir.iterdir()) or (out_dir / SUMMARY).is_file(),
            f"--out {str(out_dir)!r} is a non-empty directory that is not a demo build; refusing to replace it",
        )


def resolve_shape(base: DemoShape, overrides: dict[str, Any]) -> DemoShape:
    known = {field.name for field in dataclasses.fields(DemoShape)}
    unknown = sorted(set(overrides) - known)
    require(not unknown, f"unknown shape field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides)


def token_stream(tokenizer: Any, documents: tuple[str, ...]) -> torch.Tensor:
    """Token ids of the documents joined by blank lines, encoded in parallel one document at a time.

    The blank line between documents is encoded the way it appears inside a text, so the
    stream matches tokenizing the split file as a whole up to document boundaries.
    """
    backend = tokenizer.backend_tokenizer
    separator = backend.encode(f"A{JOINER}A", add_special_tokens=False).ids[1:-1]
    ids: list[int] = []
    for index, encoding in enumerate(backend.encode_batch(list(documents), add_special_tokens=False)):
        if index:
            ids.extend(separator)
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.long)


@functools.lru_cache(maxsize=2)
def _train_streams(corpus: Corpus, vocab_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    tokenizer = demo_tokenizer(corpus, vocab_size, seq_len)
    return {domain: token_stream(tokenizer, corpus.documents[domain]["train"]) for domain in DOMAINS}


def build_demo(
    out_dir: str | os.PathLike[str],
    family: str = "mixtral",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    tiny: bool = False,
    budget: CorpusBudget | None = None,
    settings: TrainSettings | None = None,
    progress: bool = False,
    **shape_overrides: int,
) -> Path:
    """Build the demo MoE into `out_dir` and return that path.

    `tiny=True` starts from `TINY_SHAPE` and `TINY_BUDGET` (a build of a few steps then
    takes seconds); keyword arguments named like `DemoShape` fields override the shape.
    Corpus, tokenizer and token streams are cached per process, so repeated tiny builds
    only pay for training. Bad input raises `UsageError`.
    """
    out = Path(out_dir)
    require(family in FAMILIES, f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    require(isinstance(steps, int) and steps >= 1, f"steps must be a positive integer, got {steps!r}")
    check_out_dir(out)
    shape = resolve_shape(TINY_SHAPE if tiny else DEFAULT_SHAPE, shape_overrides)
    check_shape(shape)
    budget = budget or (TINY_BUDGET if tiny else FULL_BUDGET)
    settings = dataclasses.replace(settings or TrainSettings(), steps=steps)

    started = time.perf_counter()
    corpus = build_corpus(seed, budget)
    tokenizer = demo_tokenizer(corpus, shape.vocab_size, shape.seq_len)
    streams = _train_streams(corpus, shape.vocab_size, shape.seq_len)
    short = [domain for domain, stream in streams.items() if stream.numel() <= shape.seq_len]
    if short:
        raise UsageError(f"training text of {', '.join(short)} is shorter than one window of seq_len {shape.seq_len}")
    with atomic_dir(out) as tmp:
        corpus_chars = corpus.write(tmp / "data")
        with deterministic():
            model = new_model(family, shape, seed)
            train_started = time.perf_counter()
            losses = train(model, streams, shape, settings, seed, progress)
            train_seconds = time.perf_counter() - train_started
        texts = {domain: corpus.text(domain, "test") for domain in (*DOMAINS, MIXED)}
        heldout = evaluate_texts(model, tokenizer, texts, shape.seq_len)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        summary = _summary(model, family, seed, settings, shape, losses, heldout, corpus_chars, streams)
        summary["train_seconds"] = round(train_seconds, 2)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        write_json(tmp / SUMMARY, summary)
    return out


def _summary(
    model: torch.nn.Module,
    family: str,
    seed: int,
    settings: TrainSettings,
    shape: DemoShape,
    losses: list[float],
    heldout: dict[str, Any],
    corpus_chars: dict[str, dict[str, int]],
    streams: dict[str, torch.Tensor],
) -> dict[str, Any]:
    tail = losses[-min(len(losses), 50) :]
    return {
        "family": family,
        "seed": seed,
        "steps": settings.steps,
        "shape": dataclasses.asdict(shape),
        "train": dataclasses.asdict(settings),
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss_first": losses[0],
        "train_loss_last50": sum(tail) / len(tail),
        "heldout_split": "test",
        "heldout_seq_len": shape.seq_len,
        "perplexity": {name: round(result.ppl, 4) for name, result in heldout.items()},
        "heldout": {
            name: {"nll": result.nll, "tokens": result.tokens, "windows": result.windows}
            for name, result in heldout.items()
        },
        "moe_layers": [layer.index for layer in adapt(model).moe_layers],
        "expert_usage": {name: result.expert_usage for name, result in heldout.items()},
        "corpus_chars": corpus_chars,
        "train_tokens": {domain: int(stream.numel()) for domain, stream in streams.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
