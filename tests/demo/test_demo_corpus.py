"""The demo corpus: deterministic, three domains, held-out splits never trained on."""

from __future__ import annotations

import re
from pathlib import Path

from moequant.demo import DOMAINS, MIXED, SPLITS, TINY_BUDGET, build_corpus
from moequant.demo.corpus import Corpus, arithmetic_documents, interleave, split_of, stdlib_documents

_PROBLEM = re.compile(r"Q: (?P<question>[0-9 +*-]+) = \?\nA: (?P<steps>.*)\. The answer is (?P<answer>-?\d+)\.")


def _uncached(seed: int) -> Corpus:
    stdlib = stdlib_documents.__wrapped__(TINY_BUDGET)
    documents = {"prose": stdlib["prose"], "code": stdlib["code"], "math": arithmetic_documents.__wrapped__(seed, TINY_BUDGET)}
    return Corpus(seed, TINY_BUDGET, documents)


def test_corpus_is_deterministic() -> None:
    first, second = _uncached(0), _uncached(0)
    for domain in (*DOMAINS, MIXED):
        for split in SPLITS:
            assert first.text(domain, split) == second.text(domain, split)


def test_seed_changes_only_the_arithmetic() -> None:
    zero, one = build_corpus(0, TINY_BUDGET), build_corpus(1, TINY_BUDGET)
    assert zero.text("prose", "train") == one.text("prose", "train")
    assert zero.text("code", "train") == one.text("code", "train")
    assert zero.text("math", "train") != one.text("math", "train")


def test_three_domains_look_like_their_domain() -> None:
    corpus = build_corpus(0, TINY_BUDGET)
    for domain in DOMAINS:
        for split in SPLITS:
            assert corpus.documents[domain][split], (domain, split)
    code = corpus.text("code", "train")
    assert "def " in code and "import " in code
    prose = corpus.text("prose", "train")
    assert len(re.findall(r"\b(the|and|of)\b", prose)) > len(prose) / 200
    assert all(doc.startswith("Q: ") for doc in corpus.documents["math"]["train"])


def test_arithmetic_answers_are_right() -> None:
    corpus = build_corpus(0, TINY_BUDGET)
    for doc in corpus.documents["math"]["test"]:
        match = _PROBLEM.fullmatch(doc)
        assert match, doc
        assert int(match["answer"]) == eval(match["question"]), doc  # noqa: S307 - digits and + - * only
        for step in match["steps"].split("; "):
            left, right = step.split(" = ")
            assert eval(left) == int(right), doc  # noqa: S307


def test_heldout_splits_are_disjoint_from_training() -> None:
    corpus = build_corpus(0, TINY_BUDGET)
    for domain in DOMAINS:
        train = set(corpus.documents[domain]["train"])
        for split in ("validation", "test"):
            assert not train & set(corpus.documents[domain][split]), (domain, split)
    questions = {split: {doc.split("\n")[0] for doc in corpus.documents["math"][split]} for split in SPLITS}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    assert split_of("json/decoder.py") == split_of("json/decoder.py")


def test_mixed_interleaves_all_domains_from_the_start() -> None:
    corpus = build_corpus(0, TINY_BUDGET)
    parts = [corpus.documents[domain]["train"] for domain in DOMAINS]
    merged = interleave(parts)
    assert sorted(merged) == sorted(doc for docs in parts for doc in docs)
    head = merged[: len(merged) // 4]
    for docs in parts:
        assert set(head) & set(docs)


def test_write_lays_out_every_domain_and_split(tmp_path: Path) -> None:
    corpus = build_corpus(0, TINY_BUDGET)
    written = corpus.write(tmp_path)
    for domain in (*DOMAINS, MIXED):
        for split in SPLITS:
            path = tmp_path / domain / f"{split}.txt"
            assert path.read_text(encoding="utf-8") == corpus.text(domain, split)
            assert written[domain][split] == len(corpus.text(domain, split))
