"""The demo corpus: three domains built from what every Python installation carries.

English prose (pydoc topics and stdlib docstrings), Python source (the stdlib's own
modules) and generated arithmetic with worked answers stand in for the paper's WikiText2,
HumanEval and GSM8K. Nothing is downloaded, so the demo builds offline and the same
interpreter plus the same seed always yields the same text.

Held-out splits are chosen per source (a pydoc topic, a stdlib file, an arithmetic
question) by a stable hash, so no document of `validation` or `test` is ever trained on;
a file's docstrings and its code always land in the same split.
"""

from __future__ import annotations

import ast
import functools
import os
import random
import sysconfig
import tokenize
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DOMAINS: tuple[str, ...] = ("prose", "code", "math")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MIXED = "mixed"
JOINER = "\n\n"
"""Documents of a split file are separated by one blank line."""

_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "encodings", "pydoc_data", "__pycache__"})
_MIN_DOCSTRING = 80
_HELDOUT_DOC_CHARS = 8_000
"""Held-out code keeps at most this much of each file, so a test split spans several modules."""
_HELDOUT_PERCENT = {"test": 5, "validation": 5}


@dataclass(frozen=True)
class CorpusBudget:
    """Character budgets per domain and split.

    Held-out budgets differ by domain so that each domain's test text is roughly the
    same number of tokens (arithmetic has about three times as many tokens per character
    as prose because every digit is its own token).
    """

    train_chars: int
    prose_heldout_chars: int
    code_heldout_chars: int
    math_heldout_chars: int

    def limit(self, domain: str, split: str) -> int:
        return self.train_chars if split == "train" else getattr(self, f"{domain}_heldout_chars")


FULL_BUDGET = CorpusBudget(4_000_000, prose_heldout_chars=64_000, code_heldout_chars=56_000, math_heldout_chars=24_000)
TINY_BUDGET = CorpusBudget(60_000, prose_heldout_chars=3_000, code_heldout_chars=3_000, math_heldout_chars=1_500)


@dataclass(frozen=True)
class Corpus:
    """Documents per domain and split; `text` gives exactly what the split files hold.

    Identity is (seed, budget), which determine the documents, so a corpus can key
    per-process caches such as the trained tokenizer.
    """

    seed: int
    budget: CorpusBudget
    documents: Mapping[str, Mapping[str, tuple[str, ...]]] = field(compare=False, hash=False, repr=False)

    def text(self, domain: str, split: str) -> str:
        if domain == MIXED:
            return JOINER.join(interleave([self.documents[d][split] for d in DOMAINS])) + "\n"
        return JOINER.join(self.documents[domain][split]) + "\n"

    def write(self, data_dir: Path) -> dict[str, dict[str, int]]:
        """Write DIR/{domain}/{split}.txt for the three domains and `mixed`; return characters written."""
        written: dict[str, dict[str, int]] = {}
        for domain in (*DOMAINS, MIXED):
            folder = data_dir / domain
            folder.mkdir(parents=True, exist_ok=True)
            written[domain] = {}
            for split in SPLITS:
                text = self.text(domain, split)
                (folder / f"{split}.txt").write_text(text, encoding="utf-8")
                written[domain][split] = len(text)
        return written


def interleave(parts: list[tuple[str, ...]]) -> list[str]:
    """Merge document lists so every stretch of the result mixes the domains in proportion.

    The next document always comes from the list that has consumed the smallest fraction
    of its characters, so the first windows of a mixed file are as mixed as the last.
    """
    totals = [max(1, sum(len(doc) for doc in docs)) for docs in parts]
    used = [0] * len(parts)
    positions = [0] * len(parts)
    merged: list[str] = []
    while True:
        open_parts = [i for i, docs in enumerate(parts) if positions[i] < len(docs)]
        if not open_parts:
            return merged
        pick = min(open_parts, key=lambda i: (used[i] / totals[i], i))
        doc = parts[pick][positions[pick]]
        merged.append(doc)
        used[pick] += len(doc)
        positions[pick] += 1


def split_of(key: str) -> str:
    """Stable split assignment of one source: the same key lands in the same split everywhere."""
    bucket = zlib.crc32(key.encode("utf-8")) % 100
    if bucket < _HELDOUT_PERCENT["test"]:
        return "test"
    if bucket < _HELDOUT_PERCENT["test"] + _HELDOUT_PERCENT["validation"]:
        return "validation"
    return "train"


def _hash_order(key: str) -> tuple[int, str]:
    return zlib.crc32(key.encode("utf-8")) ^ 0x5BD1E995, key


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_modules(root: Path | None = None) -> list[str]:
    """Relative paths of the stdlib's own modules, tests, vendored packages and codec tables left out."""
    base = root or stdlib_root()
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        rel = Path(folder).relative_to(base)
        found.extend((rel / name).as_posix() for name in files if name.endswith(".py") and not name.startswith("test_"))
    return sorted(found)


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= _MIN_DOCSTRING:
                found.append(doc)
    return found


def _pydoc_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(f"pydoc:{name}", text.strip()) for name, text in sorted(topics.items()) if text.strip()]


class _Filler:
    """Collects documents per split until each split's character budget is spent.

    Text and code may be cut at a line boundary to fit; a problem and its answer never
    are (`truncate=False`): the first one that does not fit closes its split.
    """

    def __init__(self, domain: str, budget: CorpusBudget, truncate: bool = True) -> None:
        self.domain = domain
        self.budget = budget
        self.truncate = truncate
        self.docs: dict[str, list[str]] = {split: [] for split in SPLITS}
        self.chars = dict.fromkeys(SPLITS, 0)

    def full(self, split: str) -> bool:
        return self.chars[split] >= self.budget.limit(self.domain, split)

    def all_full(self) -> bool:
        return all(self.full(split) for split in SPLITS)

    def add(self, split: str, doc: str) -> None:
        room = self.budget.limit(self.domain, split) - self.chars[split]
        if split != "train":
            room = min(room, _HELDOUT_DOC_CHARS)
        if room <= 0:
            return
        if len(doc) > room and not self.truncate:
            self.chars[split] = self.budget.limit(self.domain, split)
            return
        if len(doc) > room:
            doc = doc[:room].rsplit("\n", 1)[0] if "\n" in doc[:room] else doc[:room]
        if doc.strip():
            self.docs[split].append(doc)
            self.chars[split] += len(doc) + len(JOINER)

    def result(self) -> dict[str, tuple[str, ...]]:
        return {split: tuple(docs) for split, docs in self.docs.items()}


@functools.lru_cache(maxsize=4)
def stdlib_documents(budget: CorpusBudget) -> dict[str, dict[str, tuple[str, ...]]]:
    """Prose and code documents per split, read in a fixed hash order until the budgets are met.

    Cached per process: a test session that builds several tiny demos reads the
    stdlib once.
    """
    prose, code = _Filler("prose", budget), _Filler("code", budget)
    for key, text in sorted(_pydoc_topics(), key=lambda item: _hash_order(item[0])):
        prose.add(split_of(key), text)
    root = stdlib_root()
    for rel in sorted(stdlib_modules(root), key=_hash_order):
        if prose.all_full() and code.all_full():
            break
        split = split_of(rel)
        if prose.full(split) and code.full(split):
            continue
        try:
            with tokenize.open(root / rel) as handle:
                source = handle.read()
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        code.add(split, source.strip())
        if not prose.full(split):
            for doc in _docstrings(source):
                prose.add(split, doc)
    return {"prose": prose.result(), "code": code.result()}


def _operand(rng: random.Random, after_times: bool) -> int:
    return rng.randint(2, 12) if after_times else rng.randint(1, 99)


def arithmetic_problem(rng: random.Random) -> str:
    """One question with a worked answer that evaluates by the usual precedence, step by step."""
    n_ops = rng.choices((1, 2, 3), weights=(3, 4, 2))[0]
    ops = [rng.choice("+-*") for _ in range(n_ops)]
    numbers = [_operand(rng, False)]
    for op in ops:
        numbers.append(_operand(rng, op == "*"))
    question = " ".join(f"{n} {op}" for n, op in zip(numbers, ops)) + f" {numbers[-1]}"
    return f"Q: {question} = ?\nA: {_worked_answer(numbers, ops)}"


def _worked_answer(numbers: list[int], ops: list[str]) -> str:
    steps = []
    numbers, ops = list(numbers), list(ops)
    for wanted in ("*", "+-"):
        i = 0
        while i < len(ops):
            if ops[i] in wanted:
                a, op, b = numbers[i], ops[i], numbers[i + 1]
                value = a * b if op == "*" else a + b if op == "+" else a - b
                steps.append(f"{a} {op} {b} = {value}")
                numbers[i : i + 2] = [value]
                del ops[i]
            else:
                i += 1
    return "; ".join(steps) + f". The answer is {numbers[0]}."


@functools.lru_cache(maxsize=8)
def arithmetic_documents(seed: int, budget: CorpusBudget) -> dict[str, tuple[str, ...]]:
    """Problems per split from one seeded stream; held-out splits are drawn first and never repeat in train."""
    rng = random.Random(f"moequant-demo-arithmetic-{seed}")
    seen: set[str] = set()
    filler = _Filler("math", budget, truncate=False)
    for split in ("test", "validation", "train"):
        while not filler.full(split):
            problem = arithmetic_problem(rng)
            question = problem.split("\n", 1)[0]
            if question in seen:
                continue
            seen.add(question)
            filler.add(split, problem)
    return filler.result()


def build_corpus(seed: int = 0, budget: CorpusBudget = FULL_BUDGET) -> Corpus:
    """The three-domain corpus for `seed` (only the arithmetic depends on it)."""
    stdlib = stdlib_documents(budget)
    documents = {"prose": stdlib["prose"], "code": stdlib["code"], "math": arithmetic_documents(seed, budget)}
    return Corpus(seed, budget, documents)

