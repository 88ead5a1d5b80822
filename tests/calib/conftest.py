"""Calibration fixtures: a tiny model directory with a real tokenizer, and text corpora on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_VOCAB = 300
SPECIALS = ["<pad>", "<s>", "</s>"]


def _corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics)[:20])


def _train_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def prose_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "prose.txt"
    path.write_text(_corpus())
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, prose_file: Path) -> Path:
    """A tiny Mixtral with a 300-token byte-level BPE, saved as a model directory (ids 0–2 special)."""
    from moequant.models.synthetic import tiny_model

    directory = tmp_path_factory.mktemp("tiny_mixtral")
    tokenizer = _train_tokenizer(prose_file.read_text())
    assert len(tokenizer) == TINY_VOCAB and tokenizer.convert_tokens_to_ids(SPECIALS) == [0, 1, 2]
    tiny_model("mixtral", seed=0, vocab_size=TINY_VOCAB).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_f64(make_tiny):
    """A tiny model of any layout in float64 with eager experts: ties between code paths cannot flip."""

    def build(layout: str, seed: int = 0) -> torch.nn.Module:
        model = make_tiny(layout, seed=seed, dtype=torch.float64)
        if layout != "deepseek_remote":
            model.set_experts_implementation("eager")
        return model

    return build
