"""A small byte-level BPE for the demo, trained on the demo's own training text.

Digits are split into single tokens before BPE sees them: arithmetic then has one token
per digit, which the tiny model learns to add and multiply far better than it learns
arbitrary multi-digit chunks. The tokenizer adds `<s>` in front of a text the way Llama
and Mixtral tokenizers do, so the reference perplexity protocol (defaults, BOS included)
applies unchanged.
"""

from __future__ import annotations

import functools
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from moequant.demo.corpus import DOMAINS, Corpus

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (BOS, EOS, PAD)
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
_SAMPLE_CHARS = 1_000_000
"""Per domain; BPE merges settle long before the whole training split is seen."""


def _sample(corpus: Corpus) -> list[str]:
    texts = []
    for domain in DOMAINS:
        taken = 0
        for doc in corpus.documents[domain]["train"]:
            if taken >= _SAMPLE_CHARS:
                break
            texts.append(doc)
            taken += len(doc)
    return texts


def train_bpe(corpus: Corpus, vocab_size: int) -> Tokenizer:
    """Train the BPE on a fixed sample of every domain's training documents."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_sample(corpus), trainer=trainer)
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
            ),
        ]
    )
    for token, expected in zip(SPECIAL_TOKENS, (BOS_ID, EOS_ID, PAD_ID)):
        assert bpe.token_to_id(token) == expected, f"{token} must have id {expected}"
    return bpe


@functools.lru_cache(maxsize=4)
def _cached_bpe(corpus: Corpus, vocab_size: int) -> str:
    return train_bpe(corpus, vocab_size).to_str()


def demo_tokenizer(corpus: Corpus, vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """The transformers tokenizer for `corpus`; training is cached per process (tiny test builds repeat it)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_cached_bpe(corpus, vocab_size)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
