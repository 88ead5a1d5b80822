"""Fixtures for the quantization tests: the word tokenizer and tiny model directories on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.quant.helpers import word_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return word_tokenizer()


@pytest.fixture
def model_dir(tmp_path, make_tiny, tokenizer):
    """Save a tiny model of `layout` with the word tokenizer; returns its directory."""

    def build(layout: str = "mixtral", seed: int = 0) -> Path:
        out = tmp_path / f"model-{layout}-{seed}"
        make_tiny(layout, seed=seed).save_pretrained(out)
        tokenizer.save_pretrained(out)
        return out

    return build
