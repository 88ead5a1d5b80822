"""Fixtures for evaluation tests: a byte-level BPE trained on stdlib text and a tiny MoE that matches it."""

from __future__ import annotations

from pathlib import Path

import pytest

from moequant.models.synthetic import tiny_model

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


def local_english(chars: int) -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))[:chars]


@pytest.fixture(scope="session")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([local_english(60_000)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model("mixtral", seed=0, vocab_size=len(tokenizer))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, model, tokenizer) -> Path:
    """The tiny model as an ordinary (unquantized) model directory, as `--model` takes it."""
    path = tmp_path_factory.mktemp("tiny-mixtral")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "held_out.txt"
    path.write_text(local_english(200_000)[-2_500:], encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def _private_datasets_cache(tmp_path_factory):
    """lm-eval's json loader caches under the datasets cache: keep it inside this module's tmp dir."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))
        yield


def _code_text() -> str:
    import json.decoder
    import textwrap

    return textwrap.dedent(Path(json.decoder.__file__).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def held_out_dir(tmp_path_factory) -> Path:
    """Stands in for the demo's DIR/data: prose (with a validation split), code and arithmetic."""
    root = tmp_path_factory.mktemp("demo") / "data"
    prose = local_english(30_000)
    files = {
        "prose/test.txt": prose[:15_000],
        "prose/validation.txt": prose[15_000:],
        "code/test.txt": _code_text(),
        "math/test.txt": "\n".join(f"{a} + {b} = {a + b}" for a in range(12) for b in range(12)),
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content, encoding="utf-8")
    return root
